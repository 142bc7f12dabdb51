import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;

/**
 * An abandoned transaction with the Java client: a read_committed consumer
 * stops at it (a later committed record waits behind it) until the
 * coordinator aborts it past its transaction.timeout.ms; the abandoned
 * producer's commit then fails. Run against a broker that checks for
 * timed-out transactions every 200 ms.
 */
public final class TransactionTimeoutCheck {
    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.createTopics(List.of(new NewTopic("j-slow", 1, (short) 1))).all().get();
        }
        try (KafkaProducer<String, String> slow = new KafkaProducer<>(Check.props(bs, "transactional.id", "j-slow",
                "transaction.timeout.ms", "1500", "max.block.ms", "20000",
                "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
            slow.initTransactions();
            slow.beginTransaction();
            slow.send(new ProducerRecord<>("j-slow", 0, null, "abandoned")).get();
            try (KafkaProducer<String, String> other = new KafkaProducer<>(Check.props(bs, "transactional.id",
                    "j-other", "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
                other.initTransactions();
                other.beginTransaction();
                other.send(new ProducerRecord<>("j-slow", 0, null, "committed"));
                other.commitTransaction();
            }
            List<String> seen = new ArrayList<>();
            long started = System.currentTimeMillis();
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Check.props(bs, "group.id", "j-slow-reader",
                    "enable.auto.commit", "false", "isolation.level", "read_committed",
                    "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE))) {
                TopicPartition tp = new TopicPartition("j-slow", 0);
                c.assign(List.of(tp));
                c.seekToBeginning(List.of(tp));
                c.poll(Duration.ofMillis(300)).forEach(r -> seen.add(r.value()));
                Check.that(seen.isEmpty() || System.currentTimeMillis() - started > 1500,
                        "read_committed stops at the open transaction: " + seen);
                long deadline = System.currentTimeMillis() + 30_000;
                while (seen.isEmpty() && System.currentTimeMillis() < deadline) {
                    c.poll(Duration.ofMillis(300)).forEach(r -> seen.add(r.value()));
                }
            }
            Check.that(seen.equals(List.of("committed")), "only the committed record, after the abort: " + seen);
            boolean failed = false;
            try {
                slow.commitTransaction();
            } catch (KafkaException e) {
                failed = true;
            }
            Check.that(failed, "the abandoned producer's commit fails");
        }
        System.out.println("transaction timeout: ok, the abandoned transaction aborted by the coordinator");
    }
}
