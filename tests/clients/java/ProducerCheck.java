import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordTooLargeException;

/** The idempotent Java producer with every codec, large and too-large records. */
public final class ProducerCheck {
    static final int PER_CODEC = 4_000;

    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            admin.createTopics(List.of(new NewTopic("j-produce", 4, (short) 1), new NewTopic("j-tx", 1, (short) 1))).all().get();
        }
        String[] codecs = {"none", "gzip", "snappy", "lz4", "zstd"};
        AtomicInteger acked = new AtomicInteger();
        AtomicReference<Exception> failed = new AtomicReference<>();
        for (String codec : codecs) {
            try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "enable.idempotence", "true",
                    "acks", "all", "compression.type", codec, "linger.ms", "5", "key.serializer", Check.STR_SER,
                    "value.serializer", Check.STR_SER))) {
                for (int i = 0; i < PER_CODEC; i++) {
                    p.send(new ProducerRecord<>("j-produce", "key-" + i, codec + "-" + i + "-" + "x".repeat(100)),
                            (md, e) -> {
                                if (e != null) {
                                    failed.set(e);
                                } else {
                                    acked.incrementAndGet();
                                }
                            });
                }
                p.flush();
            }
        }
        Check.that(failed.get() == null, "a send failed: " + failed.get());
        int total = PER_CODEC * codecs.length;
        Check.that(acked.get() == total, "acknowledged " + acked.get() + " of " + total);

        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(Check.props(bs, "max.request.size", "4194304",
                "key.serializer", Check.BYTES_SER, "value.serializer", Check.BYTES_SER))) {
            p.send(new ProducerRecord<>("j-produce", 0, null, new byte[900 * 1024])).get();
            try {
                p.send(new ProducerRecord<>("j-produce", 0, null, new byte[2 * 1024 * 1024])).get();
                Check.that(false, "a 2 MiB record is refused");
            } catch (ExecutionException e) {
                Check.that(e.getCause() instanceof RecordTooLargeException, "RecordTooLargeException: " + e.getCause());
            }
        }

        // Everything acknowledged is there, once.
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(Check.props(bs, "group.id", "j-produce-check",
                "enable.auto.commit", "false", "max.partition.fetch.bytes", "2097152",
                "key.deserializer", Check.BYTES_DE, "value.deserializer", Check.BYTES_DE))) {
            List<TopicPartition> parts = List.of(new TopicPartition("j-produce", 0), new TopicPartition("j-produce", 1),
                    new TopicPartition("j-produce", 2), new TopicPartition("j-produce", 3));
            c.assign(parts);
            c.seekToBeginning(parts);
            int seen = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen < total + 1 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    seen++;
                }
            }
            Check.that(seen == total + 1, "read back " + seen + " of " + (total + 1));
        }
        // A transactional producer: one transaction committed, one aborted
        // (flushed first, so its records are in the log); a read_committed
        // consumer reads the committed records alone.
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "transactional.id", "j-tx",
                "max.block.ms", "30000", "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 3; i++) {
                p.send(new ProducerRecord<>("j-tx", 0, null, "committed-" + i));
            }
            p.commitTransaction();
            p.beginTransaction();
            for (int i = 0; i < 2; i++) {
                p.send(new ProducerRecord<>("j-tx", 0, null, "aborted-" + i));
            }
            p.flush();
            p.abortTransaction();
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Check.props(bs, "group.id", "j-tx-check",
                "enable.auto.commit", "false", "isolation.level", "read_committed",
                "key.deserializer", Check.STR_DE, "value.deserializer", Check.STR_DE))) {
            TopicPartition tp = new TopicPartition("j-tx", 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<String> got = new java.util.ArrayList<>();
            long deadline = System.currentTimeMillis() + 10_000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(300))) {
                    got.add(r.value());
                }
                if (c.position(tp) >= 7) {
                    break;
                }
            }
            Check.that(got.equals(List.of("committed-0", "committed-1", "committed-2")),
                    "read_committed reads the committed records alone: " + got);
            Check.that(c.position(tp) == 7, "past both markers: " + c.position(tp));
        }
        System.out.println("producer: ok, " + total + " records with every codec, one of 900 KiB");
    }
}
