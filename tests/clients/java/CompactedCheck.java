import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;

/**
 * A compacted topic with the Java client: 200 keys written 10 times each
 * and every tenth key deleted; once the broker's cleaner ran, a consumer
 * reading from the start to the end sees each live key once, with its
 * latest value, and no deleted key. Run against a broker that looks for
 * logs to clean every 200 ms.
 */
public final class CompactedCheck {
    static final int KEYS = 200;
    static final int ROUNDS = 10;

    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            NewTopic t = new NewTopic("j-compacted", 1, (short) 1).configs(Map.of("cleanup.policy", "compact",
                    "segment.bytes", "16384", "segment.ms", "100", "min.cleanable.dirty.ratio", "0.01",
                    "delete.retention.ms", "0"));
            admin.createTopics(List.of(t)).all().get();
        }
        Map<String, String> want = new HashMap<>();
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "linger.ms", "5",
                "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
            for (int r = 0; r < ROUNDS; r++) {
                for (int k = 0; k < KEYS; k++) {
                    p.send(new ProducerRecord<>("j-compacted", 0, "k" + k, k + "-" + r));
                    want.put("k" + k, k + "-" + r);
                }
            }
            for (int k = 0; k < KEYS; k += 10) {
                p.send(new ProducerRecord<>("j-compacted", 0, "k" + k, null));
                want.remove("k" + k);
            }
            p.flush();
            Thread.sleep(300);
            p.send(new ProducerRecord<>("j-compacted", 0, "roll", "last")).get();
            want.put("roll", "last");
        }
        TopicPartition tp = new TopicPartition("j-compacted", 0);
        Map<String, String> got = new HashMap<>();
        int records = 0;
        long deadline = System.currentTimeMillis() + 60_000;
        while (System.currentTimeMillis() < deadline) {
            got.clear();
            records = 0;
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Check.props(bs, "group.id",
                    "j-compacted-reader", "enable.auto.commit", "false",
                    "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE))) {
                c.assign(List.of(tp));
                c.seekToBeginning(List.of(tp));
                long end = c.endOffsets(List.of(tp)).get(tp);
                while (c.position(tp) < end) {
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) {
                        got.put(r.key(), r.value());
                        records++;
                    }
                }
            }
            if (records == want.size() && got.equals(want)) {
                break;
            }
            Thread.sleep(300);
        }
        Check.that(got.equals(want), "the latest value of each live key: " + got.size() + " keys");
        Check.that(records == want.size(), "one record per live key after cleaning: " + records);
        System.out.println("compaction: ok, " + records + " records, one per live key");
    }
}
