package io.opentelemetry.proto.common.v1;
public final class AnyValue {
    public static Builder newBuilder() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public String getStringValue() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public static final class Builder {
        public Builder setStringValue(String v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public AnyValue build() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    }
}
