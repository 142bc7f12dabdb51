import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * The Java client over SSL, SASL_SSL (SCRAM-SHA-512) and mutual TLS, with
 * PEM trust and key stores (KIP-651). Arguments: the SSL bootstrap, the
 * SASL_SSL one, the CA file; the mutual-TLS broker's SSL bootstrap, its CA
 * file, and the client's PEM key store (certificate and key).
 */
public final class TlsCheck {
    static Properties tls(String bs, String ca, String protocol, String... kv) {
        Properties p = Check.props(bs, kv);
        p.put("security.protocol", protocol);
        p.put("ssl.truststore.type", "PEM");
        p.put("ssl.truststore.location", ca);
        return p;
    }

    static void roundTrip(String label, Properties base, String topic) throws Exception {
        try (Admin admin = Admin.create(base)) {
            admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
        }
        Properties pp = new Properties();
        pp.putAll(base);
        pp.put("acks", "all");
        pp.put("key.serializer", Check.STR_SER);
        pp.put("value.serializer", Check.STR_SER);
        int n = 1_000;
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>(topic, "k" + i, "v" + i + "-" + "x".repeat(i % 50 == 0 ? 40_000 : 10)));
            }
            p.flush();
        }
        Properties cp = new Properties();
        cp.putAll(base);
        cp.put("group.id", topic + "-group");
        cp.put("auto.offset.reset", "earliest");
        cp.put("key.deserializer", Check.STR_DE);
        cp.put("value.deserializer", Check.STR_DE);
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (got.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    got.add(r.value());
                }
            }
            c.commitSync();
        }
        Check.that(got.size() == n, label + ": consumed " + got.size() + " of " + n);
    }

    public static void main(String[] args) throws Exception {
        roundTrip("SSL", tls(args[0], args[2], "SSL"), "j-ssl");
        roundTrip("SASL_SSL", tls(args[1], args[2], "SASL_SSL", "sasl.mechanism", "SCRAM-SHA-512", "sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"bob\" password=\"bob-secret\";"),
                "j-sasl-ssl");
        roundTrip("mTLS", tls(args[3], args[4], "SSL", "ssl.keystore.type", "PEM", "ssl.keystore.location", args[5]),
                "j-mtls");
        System.out.println("tls ok");
    }
}
