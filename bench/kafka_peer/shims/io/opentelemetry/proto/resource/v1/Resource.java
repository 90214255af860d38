package io.opentelemetry.proto.resource.v1;
import io.opentelemetry.proto.common.v1.KeyValue;
public final class Resource {
    public static Builder newBuilder() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public Builder toBuilder() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public java.util.List<KeyValue> getAttributesList() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public static final class Builder {
        public Builder addAttributes(KeyValue v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder addAttributes(KeyValue.Builder v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder clearAttributes() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Resource build() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    }
}
