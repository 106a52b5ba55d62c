"""Where server counters come from: metrics targets (one URL per replica, a DNS name expanded to
its addresses, or a Prometheus server), who answered each scrape, and a fleet's deltas."""
