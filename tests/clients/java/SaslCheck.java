import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.SaslAuthenticationException;

/**
 * SASL_PLAINTEXT with the Java client: a SCRAM-SHA-512 user made through the
 * admin API (on the PLAINTEXT listener), then produce, a consumer group and
 * admin calls as that user, PLAIN as `alice`, and a wrong password refused.
 * Arguments: the SASL listener's bootstrap, the PLAINTEXT one's.
 */
public final class SaslCheck {
    static Properties sasl(String bs, String mechanism, String user, String password, String... kv) {
        String module = mechanism.equals("PLAIN")
                ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                : "org.apache.kafka.common.security.scram.ScramLoginModule";
        Properties p = Check.props(bs, kv);
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", mechanism);
        p.put("sasl.jaas.config", module + " required username=\"" + user + "\" password=\"" + password + "\";");
        return p;
    }

    public static void main(String[] args) throws Exception {
        String saslBs = args[0];
        String plainBs = args[1];
        try (Admin admin = Admin.create(Check.props(plainBs))) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion("java-user",
                    new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), "java-secret"))).all().get();
            Map<String, UserScramCredentialsDescription> d = admin.describeUserScramCredentials(List.of("java-user"))
                    .all().get();
            ScramCredentialInfo info = d.get("java-user").credentialInfos().get(0);
            Check.that(info.mechanism() == ScramMechanism.SCRAM_SHA_512 && info.iterations() == 8192,
                    "described: " + info);
        }
        try (Admin admin = Admin.create(sasl(saslBs, "SCRAM-SHA-512", "java-user", "java-secret"))) {
            admin.createTopics(List.of(new NewTopic("j-sasl", 2, (short) 1))).all().get();
            Check.that(admin.describeCluster().nodes().get().iterator().next().port()
                    == Integer.parseInt(saslBs.split(":")[1]), "the SASL listener's endpoint");
        }
        int n = 2_000;
        try (KafkaProducer<String, String> p = new KafkaProducer<>(sasl(saslBs, "SCRAM-SHA-512", "java-user",
                "java-secret", "acks", "all", "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>("j-sasl", "k" + i, "v" + i));
            }
            p.flush();
        }
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(sasl(saslBs, "PLAIN", "alice", "alice-secret",
                "group.id", "j-sasl-group", "auto.offset.reset", "earliest", "enable.auto.commit", "false",
                "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE))) {
            c.subscribe(List.of("j-sasl"));
            long deadline = System.currentTimeMillis() + 60_000;
            while (got.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    got.add(r.value());
                }
            }
            c.commitSync();
            OffsetAndMetadata committed = c.committed(java.util.Set.of(new TopicPartition("j-sasl", 0)))
                    .get(new TopicPartition("j-sasl", 0));
            Check.that(committed != null, "the group's commit is readable");
        }
        Check.that(got.size() == n, "consumed " + got.size() + " of " + n);

        try (Admin admin = Admin.create(sasl(saslBs, "SCRAM-SHA-512", "java-user", "wrong",
                "default.api.timeout.ms", "10000", "request.timeout.ms", "5000"))) {
            admin.listTopics().names().get();
            Check.that(false, "a wrong password is refused");
        } catch (ExecutionException e) {
            Check.that(e.getCause() instanceof SaslAuthenticationException,
                    "SaslAuthenticationException: " + e.getCause());
        }
        System.out.println("sasl ok: " + got.size() + " records as java-user and alice");
    }
}
