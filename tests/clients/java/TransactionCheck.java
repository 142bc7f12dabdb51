import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;

/**
 * Transactions with the Java client: a consume-transform-produce loop with
 * sendOffsetsToTransaction (one transaction aborted, its offsets not the
 * group's), read_committed output holding each input's result once, the
 * committed offsets at the end; a second producer with the id fencing the
 * first; and the admin client listing and describing the ids.
 */
public final class TransactionCheck {
    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.createTopics(List.of(new NewTopic("j-eos-in", 2, (short) 1), new NewTopic("j-eos-out", 2, (short) 1)))
                    .all().get();
        }
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "key.serializer", Check.STR_SER,
                "value.serializer", Check.STR_SER))) {
            for (int i = 0; i < 60; i++) {
                p.send(new ProducerRecord<>("j-eos-in", i % 2, null, String.valueOf(i)));
            }
        }
        List<TopicPartition> in = List.of(new TopicPartition("j-eos-in", 0), new TopicPartition("j-eos-in", 1));
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Check.props(bs, "group.id", "j-eos",
                "enable.auto.commit", "false", "auto.offset.reset", "earliest", "isolation.level", "read_committed",
                "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE));
             KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "transactional.id", "j-eos-proc",
                "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
            p.initTransactions();
            c.assign(in);
            int done = 0;
            boolean abortedOnce = false;
            long deadline = System.currentTimeMillis() + 60_000;
            while (done < 60 && System.currentTimeMillis() < deadline) {
                List<ConsumerRecord<String, String>> batch = new ArrayList<>();
                c.poll(Duration.ofMillis(500)).forEach(batch::add);
                if (batch.isEmpty()) {
                    continue;
                }
                p.beginTransaction();
                for (ConsumerRecord<String, String> r : batch) {
                    p.send(new ProducerRecord<>("j-eos-out", r.partition(), null, "x" + r.value()));
                }
                Map<TopicPartition, OffsetAndMetadata> positions = new HashMap<>();
                for (TopicPartition tp : in) {
                    positions.put(tp, new OffsetAndMetadata(c.position(tp)));
                }
                p.sendOffsetsToTransaction(positions, c.groupMetadata());
                if (!abortedOnce) {
                    p.flush();
                    p.abortTransaction();
                    abortedOnce = true;
                    // The aborted offsets are not the group's: back to what is.
                    Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.copyOf(in));
                    for (TopicPartition tp : in) {
                        OffsetAndMetadata o = committed.get(tp);
                        c.seek(tp, o == null ? 0 : o.offset());
                    }
                    continue;
                }
                p.commitTransaction();
                done += batch.size();
            }
            Check.that(done == 60, "processed " + done + " of 60");
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.copyOf(in));
            for (TopicPartition tp : in) {
                Check.that(committed.get(tp) != null && committed.get(tp).offset() == 30,
                        "committed offset of " + tp + ": " + committed.get(tp));
            }
        }
        // Each input's result once, read with read_committed.
        List<String> out = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Check.props(bs, "group.id", "j-eos-check",
                "enable.auto.commit", "false", "isolation.level", "read_committed",
                "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE))) {
            List<TopicPartition> parts = List.of(new TopicPartition("j-eos-out", 0), new TopicPartition("j-eos-out", 1));
            c.assign(parts);
            c.seekToBeginning(parts);
            long deadline = System.currentTimeMillis() + 10_000;
            while (out.size() < 60 && System.currentTimeMillis() < deadline) {
                c.poll(Duration.ofMillis(300)).forEach(r -> out.add(r.value()));
            }
        }
        List<String> want = new ArrayList<>();
        for (int i = 0; i < 60; i++) {
            want.add("x" + i);
        }
        List<String> sorted = new ArrayList<>(out);
        sorted.sort(null);
        want.sort(null);
        Check.that(sorted.equals(want), "each input's result once: " + out);
        // A second producer with the id fences the first.
        try (KafkaProducer<String, String> zombie = new KafkaProducer<>(Check.props(bs, "transactional.id", "j-zombie",
                "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER, "max.block.ms", "20000"))) {
            zombie.initTransactions();
            zombie.beginTransaction();
            zombie.send(new ProducerRecord<>("j-eos-out", 0, null, "zombie")).get();
            try (KafkaProducer<String, String> fresh = new KafkaProducer<>(Check.props(bs, "transactional.id",
                    "j-zombie", "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
                fresh.initTransactions();
                boolean fenced = false;
                try {
                    zombie.commitTransaction();
                } catch (ProducerFencedException e) {
                    fenced = true;
                } catch (KafkaException e) {
                    fenced = e.getCause() instanceof ProducerFencedException
                            || String.valueOf(e.getMessage()).contains("fenced");
                }
                Check.that(fenced, "the zombie's commit is fenced");
                // The admin client sees the id, described at its coordinator.
                try (Admin admin = Admin.create(Check.props(bs))) {
                    boolean listed = false;
                    for (TransactionListing l : admin.listTransactions().all().get()) {
                        listed |= l.transactionalId().equals("j-zombie");
                    }
                    Check.that(listed, "listTransactions lists j-zombie");
                    var d = admin.describeTransactions(List.of("j-zombie")).all().get().get("j-zombie");
                    Check.that(d.producerEpoch() >= 1, "the fresh producer's epoch: " + d.producerEpoch());
                }
            }
        }
        System.out.println("transactions: ok, 60 records processed exactly once, a zombie fenced");
    }

    private static final class Set {
        static java.util.Set<TopicPartition> copyOf(List<TopicPartition> l) {
            return new java.util.HashSet<>(l);
        }
    }
}
