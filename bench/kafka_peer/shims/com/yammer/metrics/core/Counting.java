package com.yammer.metrics.core;
import java.util.concurrent.atomic.LongAdder;
/** Shared by the stand-in Meter, Histogram and Timer: counts events and sums values. */
abstract class Counting implements Metric {
    private final LongAdder count = new LongAdder();
    private final LongAdder sum = new LongAdder();
    void record(long n, long value) { count.add(n); sum.add(value); }
    public long count() { return count.sum(); }
    public double mean() { long c = count(); return c == 0 ? 0.0 : (double) sum.sum() / c; }
    public double sum() { return sum.sum(); }
}
