import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.TopicPartition;

/** The Java consumer: group subscribe, commitSync, resume, rebalance, seek, offsetsForTimes. */
public final class ConsumerCheck {
    static final String TOPIC = "j-group";
    static final int COUNT = 400;
    static final long BASE = 1_600_000_000_000L;

    static KafkaConsumer<String, String> consumer(String bs, String group) {
        return new KafkaConsumer<>(Check.props(bs, "group.id", group, "enable.auto.commit", "false",
                "auto.offset.reset", "earliest", "max.poll.records", "50", "key.deserializer", Check.STR_DE,
                "value.deserializer", Check.STR_DE));
    }

    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.createTopics(List.of(new NewTopic(TOPIC, 4, (short) 1))).all().get();
        }
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "key.serializer", Check.STR_SER,
                "value.serializer", Check.STR_SER))) {
            for (int i = 0; i < COUNT; i++) {
                p.send(new ProducerRecord<>(TOPIC, i % 4, BASE + i * 1000L, "k" + i, "v" + i));
            }
            p.flush();
        }

        // Subscribe, read about half, commit, close.
        Set<String> seen = new HashSet<>();
        try (KafkaConsumer<String, String> c = consumer(bs, "jg")) {
            c.subscribe(List.of(TOPIC));
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen.size() < COUNT / 2 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    seen.add(r.value());
                }
            }
            Check.that(seen.size() >= COUNT / 2, "first member read " + seen.size());
            c.commitSync();
        }
        try (Admin admin = Admin.create(Check.props(bs))) {
            Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets("jg")
                    .partitionsToOffsetAndMetadata().get();
            long sum = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            Check.that(sum == seen.size(), "committed " + sum + " for " + seen.size() + " read");
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of("jg")).all().get().get("jg");
            Check.that(d.state() == ConsumerGroupState.EMPTY, "the group is Empty after its member left: " + d.state());
        }
        // A new member resumes where the commit left off: the rest, once.
        try (KafkaConsumer<String, String> c = consumer(bs, "jg")) {
            c.subscribe(List.of(TOPIC));
            int before = seen.size();
            int rest = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen.size() < COUNT && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    Check.that(seen.add(r.value()), "read twice after resuming: " + r.value());
                    rest++;
                }
            }
            Check.that(before + rest == COUNT && seen.size() == COUNT, "resumed: " + before + " + " + rest);
            c.commitSync();
        }

        // Two members share the partitions after a rebalance.
        try (KafkaConsumer<String, String> a = consumer(bs, "jg2"); KafkaConsumer<String, String> b = consumer(bs, "jg2")) {
            a.subscribe(List.of(TOPIC));
            b.subscribe(List.of(TOPIC));
            long deadline = System.currentTimeMillis() + 60_000;
            while (System.currentTimeMillis() < deadline
                    && !(a.assignment().size() + b.assignment().size() == 4
                            && !a.assignment().isEmpty() && !b.assignment().isEmpty())) {
                a.poll(Duration.ofMillis(100));
                b.poll(Duration.ofMillis(100));
            }
            Set<TopicPartition> union = new HashSet<>(a.assignment());
            union.addAll(b.assignment());
            Check.that(union.size() == 4 && !a.assignment().isEmpty() && !b.assignment().isEmpty(),
                    "rebalanced: " + a.assignment() + " / " + b.assignment());
        }

        // seek and offsetsForTimes on an assigned partition.
        try (KafkaConsumer<String, String> c = consumer(bs, "jg3")) {
            TopicPartition p0 = new TopicPartition(TOPIC, 0);
            c.assign(List.of(p0));
            c.seek(p0, 7);
            ConsumerRecord<String, String> first = null;
            long deadline = System.currentTimeMillis() + 30_000;
            while (first == null && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    first = first == null ? r : first;
                }
            }
            Check.that(first != null && first.offset() == 7, "seek to 7: " + first);
            // Partition 0 holds records 0, 4, 8, ...: offset n has time BASE + 4n s.
            Map<TopicPartition, OffsetAndTimestamp> at = c.offsetsForTimes(Map.of(p0, BASE + 4_000L * 10 + 1));
            Check.that(at.get(p0).offset() == 11 && at.get(p0).timestamp() == BASE + 4_000L * 11,
                    "offsetsForTimes: " + at.get(p0));
        }
        // The emptied groups can lose offsets and be deleted.
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.deleteConsumerGroupOffsets("jg", Set.of(new TopicPartition(TOPIC, 0))).all().get();
            Map<TopicPartition, OffsetAndMetadata> left = admin.listConsumerGroupOffsets("jg")
                    .partitionsToOffsetAndMetadata().get();
            Check.that(!left.containsKey(new TopicPartition(TOPIC, 0)) && left.size() == 3, "offset deleted: " + left);
            admin.deleteConsumerGroups(List.of("jg", "jg2")).all().get();
            Check.that(admin.listConsumerGroups().all().get().stream().noneMatch(g -> g.groupId().equals("jg")),
                    "group deleted");
        }
        System.out.println("consumer: ok");
    }
}
