package com.yammer.metrics.core;
public class Histogram extends Counting {
    public void update(int value) { record(1, value); }
    public void update(long value) { record(1, value); }
}
