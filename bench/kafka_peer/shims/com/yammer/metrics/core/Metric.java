package com.yammer.metrics.core;
public interface Metric { }
