package com.yammer.metrics.core;
import java.util.concurrent.TimeUnit;
public class TimerContext {
    private final Timer timer; private final long start = System.nanoTime();
    TimerContext(Timer timer) { this.timer = timer; }
    public long stop() { long d = System.nanoTime() - start; timer.update(d, TimeUnit.NANOSECONDS); return d; }
}
