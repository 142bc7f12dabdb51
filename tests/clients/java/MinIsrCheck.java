import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;

/**
 * acks=all (the Java producer's default) to RF=1 topics on a broker whose
 * min.insync.replicas is above 1: one topic under the broker default, one
 * with a topic-level min.insync.replicas=3. Every send is acknowledged, as
 * Kafka's effective minimum (at most the replica count) allows.
 */
public final class MinIsrCheck {
    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.createTopics(List.of(new NewTopic("j-rf1", 1, (short) 1),
                    new NewTopic("j-rf1-min3", 1, (short) 1).configs(Map.of("min.insync.replicas", "3"))))
                    .all().get();
        }
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "acks", "all",
                "delivery.timeout.ms", "20000", "request.timeout.ms", "10000",
                "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
            for (String topic : List.of("j-rf1", "j-rf1-min3")) {
                for (int i = 0; i < 20; i++) {
                    RecordMetadata md = p.send(new ProducerRecord<>(topic, "k" + i, "v" + i)).get();
                    Check.that(md.offset() == i, topic + ": offset " + md.offset() + " for send " + i);
                }
            }
        }
        System.out.println("acks=all accepted on RF=1 topics under min.insync.replicas 2 and 3");
    }
}
