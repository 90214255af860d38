package com.yammer.metrics.core;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
public class Timer extends Counting {
    private final TimeUnit durationUnit, rateUnit;
    public Timer(TimeUnit durationUnit, TimeUnit rateUnit) { this.durationUnit = durationUnit; this.rateUnit = rateUnit; }
    public void update(long duration, TimeUnit unit) { record(1, unit.toNanos(duration)); }
    public TimerContext time() { return new TimerContext(this); }
    public <T> T time(Callable<T> event) throws Exception {
        TimerContext c = time();
        try { return event.call(); } finally { c.stop(); }
    }
    public TimeUnit durationUnit() { return durationUnit; }
    public TimeUnit rateUnit() { return rateUnit; }
}
