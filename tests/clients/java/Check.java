import java.util.Properties;

/** Shared helpers of the Java client checks. */
final class Check {
    private Check() {}

    static void that(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static Properties props(String bootstrap, String... kv) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        for (int i = 0; i + 1 < kv.length; i += 2) {
            p.put(kv[i], kv[i + 1]);
        }
        return p;
    }

    static final String STR_SER = "org.apache.kafka.common.serialization.StringSerializer";
    static final String STR_DE = "org.apache.kafka.common.serialization.StringDeserializer";
    static final String BYTES_SER = "org.apache.kafka.common.serialization.ByteArraySerializer";
    static final String BYTES_DE = "org.apache.kafka.common.serialization.ByteArrayDeserializer";
}
