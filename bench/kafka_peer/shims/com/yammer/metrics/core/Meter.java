package com.yammer.metrics.core;
import java.util.concurrent.TimeUnit;
public class Meter extends Counting {
    private final String eventType; private final TimeUnit rateUnit; private final long start = System.nanoTime();
    public Meter(String eventType, TimeUnit rateUnit) { this.eventType = eventType; this.rateUnit = rateUnit; }
    public void mark() { mark(1); }
    public void mark(long n) { record(n, n); }
    public long count() { return (long) sum(); }
    public String eventType() { return eventType; }
    public TimeUnit rateUnit() { return rateUnit; }
    public double meanRate() {
        double secs = (System.nanoTime() - start) / 1e9;
        return secs <= 0 ? 0.0 : count() / secs * rateUnit.toSeconds(1);
    }
    public double oneMinuteRate() { return meanRate(); }
    public double fiveMinuteRate() { return meanRate(); }
    public double fifteenMinuteRate() { return meanRate(); }
}
