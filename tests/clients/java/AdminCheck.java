import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;

/** Every admin call Sluice supports, through the Java AdminClient. */
public final class AdminCheck {
    public static void main(String[] args) throws Exception {
        String bs = args[0];
        try (Admin admin = Admin.create(Check.props(bs))) {
            DescribeClusterResult cluster = admin.describeCluster();
            Check.that(cluster.nodes().get().size() == 1, "one node");
            int node = cluster.controller().get().id();

            admin.createTopics(List.of(new NewTopic("j-admin", 3, (short) 1), new NewTopic("j-ts", 1, (short) 1)))
                    .all().get();
            try {
                admin.createTopics(List.of(new NewTopic("j-admin", 3, (short) 1))).all().get();
                Check.that(false, "creating an existing topic fails");
            } catch (ExecutionException e) {
                Check.that(e.getCause() instanceof TopicExistsException, "TopicExistsException: " + e.getCause());
            }
            Check.that(admin.listTopics().names().get().containsAll(Set.of("j-admin", "j-ts")), "topics listed");
            TopicDescription td = admin.describeTopics(List.of("j-admin")).allTopicNames().get().get("j-admin");
            Check.that(td.partitions().size() == 3, "three partitions");
            Check.that(td.partitions().get(0).leader().id() == node, "the node leads");
            admin.createPartitions(Map.of("j-admin", NewPartitions.increaseTo(5))).all().get();
            td = admin.describeTopics(List.of("j-admin")).allTopicNames().get().get("j-admin");
            Check.that(td.partitions().size() == 5, "grown to five");

            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, "j-admin");
            AlterConfigOp set = new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET);
            admin.incrementalAlterConfigs(Map.of(res, List.of(set))).all().get();
            Config config = admin.describeConfigs(List.of(res)).all().get().get(res);
            Check.that("3600000".equals(config.get("retention.ms").value()), "retention.ms set");
            ConfigResource brokerRes = new ConfigResource(ConfigResource.Type.BROKER, Integer.toString(node));
            Check.that(!admin.describeConfigs(List.of(brokerRes)).all().get().get(brokerRes).entries().isEmpty(),
                    "broker configs");

            // One batch of ten records whose timestamps are out of order.
            long base = 1_700_000_000_000L;
            long[] order = {0, 3, 1, 7, 2, 9, 4, 8, 5, 6};
            try (KafkaProducer<String, String> p = new KafkaProducer<>(Check.props(bs, "linger.ms", "2000",
                    "batch.size", "1000000", "key.serializer", Check.STR_SER, "value.serializer", Check.STR_SER))) {
                Future<?>[] sent = new Future<?>[order.length];
                for (int i = 0; i < order.length; i++) {
                    sent[i] = p.send(new ProducerRecord<>("j-ts", 0, base + order[i] * 1000, "k" + i, "v" + i));
                }
                p.flush();
                for (int i = 0; i < order.length; i++) {
                    Check.that(((RecordMetadata) sent[i].get()).offset() == i, "offset " + i);
                }
            }
            TopicPartition tp = new TopicPartition("j-ts", 0);
            ListOffsetsResultInfo at = admin.listOffsets(Map.of(tp, OffsetSpec.forTimestamp(base + 3500)))
                    .partitionResult(tp).get();
            Check.that(at.offset() == 3 && at.timestamp() == base + 7000, "forTimestamp to the record: " + at);
            ListOffsetsResultInfo max = admin.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp()))
                    .partitionResult(tp).get();
            Check.that(max.offset() == 5 && max.timestamp() == base + 9000, "maxTimestamp to the record: " + max);
            Check.that(admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get().offset() == 0,
                    "earliest");
            Check.that(admin.listOffsets(Map.of(tp, OffsetSpec.latest())).partitionResult(tp).get().offset() == 10,
                    "latest");

            Map<Integer, Map<String, LogDirDescription>> dirs = admin.describeLogDirs(List.of(node))
                    .allDescriptions().get();
            LogDirDescription dir = dirs.get(node).values().iterator().next();
            ReplicaInfo info = dir.replicaInfos().get(tp);
            Check.that(info != null && info.size() > 0, "describeLogDirs sizes j-ts-0: " + dir.replicaInfos());
            Check.that(dir.totalBytes().isPresent() && dir.usableBytes().isPresent(), "total and usable bytes");

            admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(2))).all().get();
            Check.that(admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp).get().offset() == 2,
                    "records deleted");

            admin.listConsumerGroups().all().get();
            admin.deleteTopics(List.of("j-admin")).all().get();
            Check.that(!admin.listTopics().names().get().contains("j-admin"), "topic deleted");
        }
        System.out.println("admin: ok");
    }
}
