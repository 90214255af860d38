package com.yammer.metrics.core;
public abstract class Gauge<T> implements Metric {
    public abstract T value();
}
