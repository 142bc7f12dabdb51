import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;

/**
 * The Java consumer with group.protocol=consumer (KIP-848): three members share six partitions by the
 * server-side range assignor, no partition is held by two members at once, a member leaves and the others
 * take its partitions, the admin client describes the group, and a new member resumes at the commits.
 */
public final class ConsumerProtocolCheck {
    static final String TOPIC = "j848";
    static final String GROUP = "j848-group";
    static final int PARTITIONS = 6;

    static KafkaConsumer<String, String> consumer(String bs) {
        return new KafkaConsumer<>(Check.props(bs, "group.id", GROUP, "group.protocol", "consumer",
                "group.remote.assignor", "range", "enable.auto.commit", "false", "auto.offset.reset", "earliest",
                "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE));
    }

    /** Subscribes `c`, committing what it read of partitions before they are taken away. */
    static void subscribe(KafkaConsumer<String, String> c) {
        c.subscribe(List.of(TOPIC), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                // A commit sent as the member's epoch moves is refused
                // (STALE_MEMBER_EPOCH, as by Kafka 4.0): send it again.
                for (int attempt = 1; ; attempt++) {
                    try {
                        c.commitSync();
                        return;
                    } catch (org.apache.kafka.common.KafkaException e) {
                        if (attempt == 5) {
                            throw e;
                        }
                        System.err.println("commit on revocation, attempt " + attempt + ": " + e);
                    }
                }
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) {}
        });
    }

    static void produce(String bs, int from, int to) {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "key.serializer", Check.STR_SER,
                "value.serializer", Check.STR_SER))) {
            for (int i = from; i < to; i++) {
                p.send(new ProducerRecord<>(TOPIC, i % PARTITIONS, "k" + i, "v" + i));
            }
            p.flush();
        }
    }

    /** Polls every member once; records what each read and checks that no two hold a partition. */
    static void pollAll(List<KafkaConsumer<String, String>> members, Set<String> seen, List<String> twice) {
        for (KafkaConsumer<String, String> c : members) {
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(50))) {
                if (!seen.add(r.value())) {
                    twice.add(r.value());
                }
            }
        }
        Set<TopicPartition> held = new HashSet<>();
        for (KafkaConsumer<String, String> c : members) {
            for (TopicPartition tp : c.assignment()) {
                Check.that(held.add(tp), tp + " held by two members at once");
            }
        }
    }

    static boolean sizes(List<KafkaConsumer<String, String>> members, int each) {
        return members.stream().allMatch(c -> c.assignment().size() == each);
    }

    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.createTopics(List.of(new NewTopic(TOPIC, PARTITIONS, (short) 1))).all().get();
        }
        produce(bs, 0, 600);
        Set<String> seen = new HashSet<>();
        List<String> twice = new ArrayList<>();
        List<KafkaConsumer<String, String>> members = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            KafkaConsumer<String, String> c = consumer(bs);
            subscribe(c);
            members.add(c);
        }
        long deadline = System.currentTimeMillis() + 60_000;
        while (!(sizes(members, 2) && seen.size() == 600) && System.currentTimeMillis() < deadline) {
            pollAll(members, seen, twice);
        }
        Check.that(sizes(members, 2), "three members with two partitions each");
        Check.that(seen.size() == 600 && twice.isEmpty(), "read " + seen.size() + ", twice " + twice);
        // The range assignor: each member holds two adjacent partitions.
        for (KafkaConsumer<String, String> c : members) {
            List<Integer> ps = c.assignment().stream().map(TopicPartition::partition).sorted().toList();
            Check.that(ps.get(1) == ps.get(0) + 1, "range assignment " + ps);
            c.commitSync();
        }
        try (Admin admin = Admin.create(Check.props(bs))) {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(GROUP)).all().get().get(GROUP);
            Check.that(d.type() == GroupType.CONSUMER, "group type " + d.type());
            Check.that(d.state() == ConsumerGroupState.STABLE, "group state " + d.state());
            Check.that(d.partitionAssignor().equals("range"), "assignor " + d.partitionAssignor());
            Check.that(d.members().size() == 3, "members " + d.members());
            for (MemberDescription m : d.members()) {
                Check.that(m.assignment().topicPartitions().size() == 2, "member assignment " + m);
            }
        }

        // One member leaves: the others take its partitions and nothing is read twice.
        KafkaConsumer<String, String> leaving = members.remove(2);
        leaving.close();
        produce(bs, 600, 900);
        deadline = System.currentTimeMillis() + 60_000;
        while (!(sizes(members, 3) && seen.size() == 900) && System.currentTimeMillis() < deadline) {
            pollAll(members, seen, twice);
        }
        Check.that(sizes(members, 3), "two members with three partitions each");
        Check.that(seen.size() == 900 && twice.isEmpty(), "read " + seen.size() + ", twice " + twice);
        for (KafkaConsumer<String, String> c : members) {
            c.commitSync();
            c.close();
        }
        try (Admin admin = Admin.create(Check.props(bs))) {
            Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(GROUP)
                    .partitionsToOffsetAndMetadata().get();
            long sum = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            Check.that(sum == 900, "committed " + sum);
        }
        // A new member resumes at the commits: only what came after.
        produce(bs, 900, 960);
        Set<String> rest = new HashSet<>();
        try (KafkaConsumer<String, String> c = consumer(bs)) {
            c.subscribe(List.of(TOPIC));
            deadline = System.currentTimeMillis() + 60_000;
            while (rest.size() < 60 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                    Check.that(!seen.contains(r.value()), "read again after resuming: " + r.value());
                    rest.add(r.value());
                }
            }
            Check.that(rest.size() == 60, "resumed with " + rest.size() + " of 60");
        }
        System.out.println("consumer protocol: 3 members, leave, describe, resume: ok");
    }
}
