package logkernel.bench;

import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.common.utils.Time;
import org.apache.kafka.server.util.KafkaScheduler;
import org.apache.kafka.storage.internals.log.Cleaner;
import org.apache.kafka.storage.internals.log.CleanerConfig;
import org.apache.kafka.storage.internals.log.CleanerStats;
import org.apache.kafka.storage.internals.log.LogConfig;
import org.apache.kafka.storage.internals.log.LogDirFailureChannel;
import org.apache.kafka.storage.internals.log.LogSegment;
import org.apache.kafka.storage.internals.log.LogToClean;
import org.apache.kafka.storage.internals.log.ProducerStateManagerConfig;
import org.apache.kafka.storage.internals.log.SkimpyOffsetMap;
import org.apache.kafka.storage.internals.log.UnifiedLog;
import org.apache.kafka.storage.internals.utils.Throttler;
import org.apache.kafka.storage.log.metrics.BrokerTopicStats;

import java.io.File;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;

/**
 * Runs Apache Kafka's own log cleaner (org.apache.kafka.storage.internals.log.Cleaner) once over
 * a partition directory, the way a broker's cleaner thread would: same Cleaner, SkimpyOffsetMap
 * (MD5, load factor 0.9) and buffer sizes as LogCleaner.CleanerThread builds from the broker
 * config log.cleaner.dedupe.buffer.size / log.cleaner.io.buffer.size with one cleaner thread.
 *
 * Usage: KafkaCleanerPeer [options] DIR [DIR2 ...]
 *   Each DIR is a Kafka partition directory (name "topic-N") that is cleaned IN PLACE: pass copies.
 *   DIR is the cold run (first cleaning in this JVM); DIR2.. are cleaned afterwards in the same JVM
 *   and reported as the warm run(s) ("seconds_warm" is the last one).
 * Options: --dedupe-buffer-bytes N (134217728), --io-buffer-bytes N (524288),
 *   --delete-retention-ms N (86400000), --segment-bytes N (Kafka's 1 GiB),
 *   --max-message-bytes N (1048588), --min-cleanable-ratio R (recorded only: the cleaner is called
 *   directly, so the log is cleaned whatever its dirty ratio, as LogCleaner does once it picks it).
 *
 * Prints one JSON line on stdout. "seconds" is the wall time of the cleaning calls only
 * (Cleaner.doClean), not JVM start-up, opening the log or allocating the dedupe buffer;
 * "cpu_seconds" is the CPU time of the cleaning thread over the same span (less sensitive to
 * other load on the machine; excludes I/O waits, including the fsync of each cleaned segment).
 */
public final class KafkaCleanerPeer {

    private static final long GIB = 1L << 30;

    private long dedupeBufferBytes = 128L << 20;
    private int ioBufferBytes = 512 << 10;
    private long deleteRetentionMs = 24L * 60 * 60 * 1000;
    private int segmentBytes = (int) GIB;
    private int maxMessageBytes = 1048588;
    private double minCleanableRatio = 0.5;
    private final List<File> dirs = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        KafkaCleanerPeer peer = new KafkaCleanerPeer();
        peer.parse(args);
        Map<String, Object> cold = null;
        Map<String, Object> warm = null;
        for (File dir : peer.dirs) {
            Map<String, Object> run = peer.cleanOnce(dir);
            if (cold == null) cold = run; else warm = run;
        }
        Map<String, Object> out = new LinkedHashMap<>(cold);
        out.put("seconds_warm", warm == null ? null : warm.get("seconds"));
        out.put("mb_per_s_warm", warm == null ? null : warm.get("mb_per_s"));
        out.put("cpu_seconds_warm", warm == null ? null : warm.get("cpu_seconds"));
        out.put("warm_runs", peer.dirs.size() - 1);
        out.put("kafka_version", AppInfoParser.getVersion());
        out.put("kafka_commit", AppInfoParser.getCommitId());
        out.put("java_version", System.getProperty("java.version"));
        out.put("dedupe_buffer_bytes", peer.dedupeBufferBytes);
        out.put("io_buffer_bytes", peer.ioBufferBytes);
        out.put("delete_retention_ms", peer.deleteRetentionMs);
        out.put("segment_bytes", peer.segmentBytes);
        out.put("min_cleanable_ratio", peer.minCleanableRatio);
        System.out.println(toJson(out));
        System.exit(0);  // Kafka's scheduler and metrics threads must not keep the JVM alive
    }

    private void parse(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                dirs.add(new File(a));
                continue;
            }
            if (i + 1 >= args.length) usage("missing value for " + a);
            String v = args[++i];
            switch (a) {
                case "--dedupe-buffer-bytes": dedupeBufferBytes = Long.parseLong(v); break;
                case "--io-buffer-bytes": ioBufferBytes = Integer.parseInt(v); break;
                case "--delete-retention-ms": deleteRetentionMs = Long.parseLong(v); break;
                case "--segment-bytes": segmentBytes = Integer.parseInt(v); break;
                case "--max-message-bytes": maxMessageBytes = Integer.parseInt(v); break;
                case "--min-cleanable-ratio": minCleanableRatio = Double.parseDouble(v); break;
                default: usage("unknown option " + a);
            }
        }
        if (dirs.isEmpty()) usage("no partition directory given");
        for (File d : dirs)
            if (!d.isDirectory()) usage("not a directory: " + d);
    }

    private static void usage(String why) {
        System.err.println("KafkaCleanerPeer: " + why);
        System.err.println("usage: KafkaCleanerPeer [--dedupe-buffer-bytes N] [--io-buffer-bytes N] "
                + "[--delete-retention-ms N] [--segment-bytes N] [--max-message-bytes N] "
                + "[--min-cleanable-ratio R] PARTITION_DIR [WARM_COPY_DIR ...]");
        System.exit(2);
    }

    /** Opens dir as a Kafka log, cleans everything below the active segment, closes it. */
    private Map<String, Object> cleanOnce(File dir) throws Exception {
        Properties props = new Properties();
        props.put(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_COMPACT);
        props.put(TopicConfig.SEGMENT_BYTES_CONFIG, Integer.toString(segmentBytes));
        props.put(TopicConfig.MAX_MESSAGE_BYTES_CONFIG, Integer.toString(maxMessageBytes));
        props.put(TopicConfig.DELETE_RETENTION_MS_CONFIG, Long.toString(deleteRetentionMs));
        props.put(TopicConfig.MIN_CLEANABLE_DIRTY_RATIO_CONFIG, Double.toString(minCleanableRatio));
        props.put(TopicConfig.FILE_DELETE_DELAY_MS_CONFIG, "0");  // replaced segments go at once
        LogConfig config = new LogConfig(props);

        Time time = Time.SYSTEM;
        KafkaScheduler scheduler = new KafkaScheduler(1, true, "kafka-peer-scheduler-");
        scheduler.startup();

        // Untimed: open the log. With lastShutdownClean=true and no producer snapshots, Kafka's
        // LogLoader neither recovers segments nor scans them for producer state: it writes empty
        // producer snapshots and creates leader-epoch-checkpoint. Missing indexes are rebuilt here.
        long openStart = System.nanoTime();
        UnifiedLog log = UnifiedLog.create(dir, config, 0L, 0L, scheduler, new BrokerTopicStats(), time,
                5 * 60 * 1000, new ProducerStateManagerConfig(24 * 60 * 60 * 1000, false),
                10 * 60 * 1000, new LogDirFailureChannel(1), true, Optional.empty());
        double openSeconds = (System.nanoTime() - openStart) / 1e9;

        long firstDirty = log.logStartOffset();
        long firstUncleanable = log.activeSegment().baseOffset();
        long inputBytes = 0;
        long inputSegments = 0;
        for (LogSegment s : log.logSegments(firstDirty, firstUncleanable)) {
            inputBytes += s.size();
            inputSegments++;
        }
        long totalBytesBefore = log.size();

        // Untimed: what LogCleaner.CleanerThread allocates once per thread (numThreads = 1).
        Cleaner cleaner = new Cleaner(0,
                new SkimpyOffsetMap((int) Math.min(dedupeBufferBytes, Integer.MAX_VALUE), CleanerConfig.HASH_ALGORITHM),
                ioBufferBytes / 2,
                maxMessageBytes,
                CleanerConfig.LOG_CLEANER_DEDUPE_BUFFER_LOAD_FACTOR,
                new Throttler(Double.MAX_VALUE, 300, "cleaner-io", "bytes", time),
                time,
                tp -> { });

        // Timed: one cleaning, i.e. what a broker does for a log that needs it. If the dedupe
        // buffer cannot hold all dirty keys, Kafka cleans up to where the map filled; a broker
        // then picks the log again, so we loop until the whole cleanable range is done.
        // bytes_* and records_read add up the rounds' I/O; records_retained is the last round's.
        long mapRecords = 0, read = 0, readBytes = 0, written = 0, writtenBytes = 0;
        double utilization = 0, mapSeconds = 0;
        int rounds = 0;
        long dirty = firstDirty;
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        long cpuStart = threads.getCurrentThreadCpuTime();
        long start = System.nanoTime();
        while (dirty < firstUncleanable) {
            Map.Entry<Long, CleanerStats> r = cleaner.doClean(
                    new LogToClean(log, dirty, firstUncleanable, false), time.milliseconds());
            CleanerStats st = r.getValue();
            mapRecords += st.mapMessagesRead();
            mapSeconds += st.elapsedIndexSecs();
            read += st.messagesRead();
            readBytes += st.bytesRead();
            written = st.messagesWritten();  // each round rewrites the log from offset 0
            writtenBytes += st.bytesWritten();
            utilization = Math.max(utilization, st.bufferUtilization());
            rounds++;
            dirty = r.getKey();
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        double cpuSeconds = (threads.getCurrentThreadCpuTime() - cpuStart) / 1e9;

        long outputSegments = log.logSegments(0, firstUncleanable).size();
        long totalBytesAfter = log.size();
        log.close();
        scheduler.shutdown();
        deleteLeftovers(dir);

        Map<String, Object> m = new LinkedHashMap<>();
        m.put("seconds", seconds);
        m.put("cpu_seconds", cpuSeconds);
        m.put("bytes_read", readBytes);
        m.put("bytes_written", writtenBytes);
        m.put("records_read", read);
        m.put("records_retained", written);
        m.put("input_bytes", inputBytes);
        m.put("mb_per_s", seconds > 0 ? inputBytes / 1e6 / seconds : null);
        m.put("map_records_read", mapRecords);
        m.put("map_seconds", mapSeconds);
        m.put("rounds", rounds);
        m.put("buffer_utilization", utilization);
        m.put("input_segments", inputSegments);
        m.put("output_segments", outputSegments);
        m.put("first_uncleanable_offset", firstUncleanable);
        m.put("log_bytes_before", totalBytesBefore);
        m.put("log_bytes_after", totalBytesAfter);
        m.put("open_seconds", openSeconds);
        m.put("dir", dir.getAbsolutePath());
        return m;
    }

    /** Segment files Kafka renamed to *.deleted but whose deferred deletion had not run yet. */
    private static void deleteLeftovers(File dir) throws IOException {
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir.toPath(), "*.deleted")) {
            for (Path p : ds) Files.deleteIfExists(p);
        }
    }

    private static String toJson(Map<String, Object> m) {
        StringBuilder sb = new StringBuilder("{");
        for (Map.Entry<String, Object> e : m.entrySet()) {
            if (sb.length() > 1) sb.append(", ");
            sb.append(quote(e.getKey())).append(": ");
            Object v = e.getValue();
            if (v == null) sb.append("null");
            else if (v instanceof Double) sb.append(String.format(Locale.ROOT, "%.6f", (Double) v));
            else if (v instanceof Number) sb.append(v);
            else sb.append(quote(v.toString()));
        }
        return sb.append("}").toString();
    }

    private static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append('"').toString();
    }
}
