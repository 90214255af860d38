package io.opentelemetry.proto.metrics.v1;
import io.opentelemetry.proto.common.v1.KeyValue;
public final class NumberDataPoint {
    public static Builder newBuilder() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public static final class Builder {
        public Builder setTimeUnixNano(long v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder setStartTimeUnixNano(long v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder setAsInt(long v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder setAsDouble(double v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder addAllAttributes(Iterable<? extends KeyValue> v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public NumberDataPoint build() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    }
}
