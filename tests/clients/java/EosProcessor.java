import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.UnsupportedVersionException;

/**
 * The Java client's exactly-once consume-transform-produce processor for
 * the crash tests, doing what eos_processor.py does: reads IN, writes one
 * OUT record per input record (its value with "-out" appended, on the same
 * partition) and commits its input offsets in the same transaction
 * (sendOffsetsToTransaction). Exits 0 once every input partition's
 * committed offset reaches its end; an abortable error aborts and rewinds
 * to the committed offsets; a fatal one exits 2.
 *
 * <pre>java EosProcessor BOOTSTRAP TXN_ID GROUP IN OUT PARTITIONS</pre>
 */
public final class EosProcessor {
    public static void main(String[] args) {
        String bs = args[0];
        String txnId = args[1];
        String group = args[2];
        String src = args[3];
        String dst = args[4];
        int partitions = Integer.parseInt(args[5]);
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(src, p));
        }
        Set<TopicPartition> all = new HashSet<>(tps);
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(Check.props(bs, "group.id", group,
                "enable.auto.commit", "false", "auto.offset.reset", "earliest", "isolation.level", "read_committed",
                "max.poll.records", "10", "key.deserializer", Check.BYTES_DE, "value.deserializer", Check.BYTES_DE));
             KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(Check.props(bs, "transactional.id", txnId,
                "linger.ms", "5", "transaction.timeout.ms", "10000", "max.block.ms", "60000",
                "key.serializer", Check.BYTES_SER, "value.serializer", Check.BYTES_SER))) {
            p.initTransactions();
            c.assign(tps);
            Map<TopicPartition, Long> ends = c.endOffsets(tps, Duration.ofSeconds(30));
            rewind(c, all);
            while (true) {
                Map<TopicPartition, OffsetAndMetadata> committed = c.committed(all, Duration.ofSeconds(30));
                boolean finished = true;
                for (TopicPartition tp : tps) {
                    OffsetAndMetadata o = committed.get(tp);
                    finished &= o != null && o.offset() >= ends.get(tp);
                }
                if (finished) {
                    System.exit(0);
                }
                ConsumerRecords<byte[], byte[]> batch = c.poll(Duration.ofSeconds(1));
                if (batch.isEmpty()) {
                    continue;
                }
                try {
                    p.beginTransaction();
                    for (ConsumerRecord<byte[], byte[]> r : batch) {
                        p.send(new ProducerRecord<>(dst, r.partition(), null, out(r.value())));
                    }
                    Map<TopicPartition, OffsetAndMetadata> positions = new HashMap<>();
                    for (TopicPartition tp : tps) {
                        positions.put(tp, new OffsetAndMetadata(c.position(tp)));
                    }
                    p.sendOffsetsToTransaction(positions, c.groupMetadata());
                    commit(p);
                } catch (ProducerFencedException | OutOfOrderSequenceException | AuthorizationException
                        | UnsupportedVersionException e) {
                    System.err.println("fatal: " + e);
                    System.exit(2);
                } catch (KafkaException e) {
                    System.err.println("aborting: " + e);
                    p.abortTransaction();
                    rewind(c, all);
                }
            }
        }
    }

    /** A commit that timed out is retried: it may be under way. */
    private static void commit(KafkaProducer<byte[], byte[]> p) {
        while (true) {
            try {
                p.commitTransaction();
                return;
            } catch (TimeoutException e) {
                System.err.println("commit timed out, again: " + e);
            }
        }
    }

    private static byte[] out(byte[] value) {
        byte[] suffix = "-out".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        byte[] v = java.util.Arrays.copyOf(value, value.length + suffix.length);
        System.arraycopy(suffix, 0, v, value.length, suffix.length);
        return v;
    }

    /** Back to the group's committed offsets (the start where none). */
    private static void rewind(KafkaConsumer<byte[], byte[]> c, Set<TopicPartition> all) {
        Map<TopicPartition, OffsetAndMetadata> committed = c.committed(all, Duration.ofSeconds(30));
        for (TopicPartition tp : all) {
            OffsetAndMetadata o = committed.get(tp);
            c.seek(tp, o == null ? 0 : o.offset());
        }
    }
}
