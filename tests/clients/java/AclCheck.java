import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;

/**
 * The Java admin client's ACL calls: a super user grants `User:carol` WRITE
 * on topics prefixed `carol-`, lists and deletes the grant; carol writes
 * while it stands and is refused once it is gone. Argument: the
 * SASL_PLAINTEXT bootstrap (PLAIN users admin and carol).
 */
public final class AclCheck {
    static Properties as(String bs, String user, String... kv) {
        Properties p = Check.props(bs, kv);
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", "PLAIN");
        p.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required username=\""
                + user + "\" password=\"" + user + "-secret\";");
        return p;
    }

    public static void main(String[] args) throws Exception {
        String bs = args[0];
        AclBinding grant = new AclBinding(new ResourcePattern(ResourceType.TOPIC, "carol-", PatternType.PREFIXED),
                new AccessControlEntry("User:carol", "*", AclOperation.WRITE, AclPermissionType.ALLOW));
        try (Admin admin = Admin.create(as(bs, "admin"))) {
            admin.createTopics(List.of(new NewTopic("carol-t", 1, (short) 1))).all().get();
            admin.createAcls(List.of(grant)).all().get();
            Collection<AclBinding> listed = admin.describeAcls(new AclBindingFilter(
                    new ResourcePatternFilter(ResourceType.TOPIC, "carol-t", PatternType.MATCH),
                    AccessControlEntryFilter.ANY)).values().get();
            Check.that(listed.size() == 1 && listed.iterator().next().equals(grant), "described: " + listed);
        }
        Properties pp = as(bs, "carol", "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER,
                "max.block.ms", "10000", "delivery.timeout.ms", "15000", "request.timeout.ms", "5000",
                "enable.idempotence", "false");
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            p.send(new ProducerRecord<>("carol-t", "k", "v")).get();
        }
        try (Admin admin = Admin.create(as(bs, "admin"))) {
            Collection<AclBinding> gone = admin.deleteAcls(List.of(grant.toFilter())).all().get();
            Check.that(gone.size() == 1, "deleted: " + gone);
        }
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            p.send(new ProducerRecord<>("carol-t", "k", "v")).get();
            Check.that(false, "a write without the ACL is refused");
        } catch (ExecutionException e) {
            Check.that(e.getCause() instanceof TopicAuthorizationException, "refused: " + e.getCause());
        }
        System.out.println("acl ok");
    }
}
