package io.opentelemetry.proto.metrics.v1;
import io.opentelemetry.proto.resource.v1.Resource;
public final class ResourceMetrics {
    public static Builder newBuilder() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    public static final class Builder {
        public Builder setResource(Resource v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public Builder addScopeMetrics(ScopeMetrics v) { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
        public ResourceMetrics build() { throw new UnsupportedOperationException("compile-time stand-in: OpenTelemetry protos are not on this classpath"); }
    }
}
