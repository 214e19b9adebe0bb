//! The lag gauges of owned partitions, from librdkafka's statistics (every [`STATS_MS`]).

use crate::metrics::KafkaMetrics;

/// How often librdkafka reports statistics (the consumer lag gauge), in ms.
pub(crate) const STATS_MS: u32 = 5_000;

/// Messages behind in one partition, -1 when unknown. librdkafka's `consumer_lag` counts
/// from the *committed* offset, which this worker advances only with a snapshot (every
/// `snapshot_interval_secs`), so it would read a healthy worker as up to one interval
/// behind; `consumer_lag_stored` counts from the position (the offset after the last
/// message handed to us). Before the first message since the assignment the position is
/// the committed offset, and only `consumer_lag` is known.
fn lag_of(p: &rdkafka::statistics::Partition) -> i64 {
    if p.consumer_lag_stored >= 0 {
        p.consumer_lag_stored
    } else {
        p.consumer_lag
    }
}

/// Sets the lag gauges of `label` from one statistics report of its topic (`None`: not
/// in the report yet): only partitions in `owned` get a series, so a report older than a
/// revoke cannot bring a revoked partition's series back; a partition whose lag librdkafka
/// does not know yet (-1) keeps its last value and adds nothing to the topic's sum.
pub(crate) fn apply_stats(
    km: &KafkaMetrics,
    label: &str,
    topic: Option<&rdkafka::statistics::Topic>,
    owned: &[i32],
) {
    let Some(t) = topic else {
        km.lag.with_label_values(&[label]).set(0);
        return;
    };
    let mut sum = 0i64;
    for &n in owned {
        if let Some(p) = t.partitions.get(&n) {
            let lag = lag_of(p);
            km.set_partition_lag(label, n, lag);
            sum = sum.saturating_add(lag.max(0));
        }
    }
    km.lag.with_label_values(&[label]).set(sum);
    // -1 is librdkafka's internal "unassigned" partition; `unknown` ones are desired but
    // not in the broker's metadata. A worker that owns nothing of the topic yet may not
    // have its metadata at all: then it says nothing rather than 0.
    let known = t
        .partitions
        .iter()
        .filter(|(&n, p)| n >= 0 && !p.unknown)
        .count();
    if known > 0 {
        km.topic_partitions
            .with_label_values(&[label])
            .set(i64::try_from(known).unwrap_or(i64::MAX));
    }
}

/// Unix time in seconds (for the snapshot timestamps).
pub(super) fn unix_now() -> i64 {
    crate::event::EventTime::now().as_millis() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    /// A statistics report of one topic: `(partition, consumer_lag, consumer_lag_stored)`.
    fn report(parts: &[(i32, i64, i64)]) -> rdkafka::statistics::Topic {
        let mut t = rdkafka::statistics::Topic::default();
        for &(n, lag, stored) in parts {
            let p = rdkafka::statistics::Partition {
                partition: n,
                consumer_lag: lag,
                consumer_lag_stored: stored,
                ..Default::default()
            };
            t.partitions.insert(n, p);
        }
        t
    }

    fn scrape(m: &Metrics, name: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn statistics_set_the_lag_of_owned_partitions_only() {
        let m = Metrics::new();
        let km = KafkaMetrics::register(&m).unwrap();
        km.consume("by_ip");
        // 0: position known; 1: nothing consumed since the assignment (committed lag only);
        // 2: unknown; 3: not ours; -1: librdkafka's internal partition.
        let t = report(&[
            (0, 900, 5),
            (1, 40, -1),
            (2, -1, -1),
            (3, 70, 70),
            (-1, -1, -1),
        ]);
        apply_stats(&km, "by_ip", Some(&t), &[0, 1, 2]);
        assert_eq!(
            scrape(&m, "tokenwatch_kafka_partition_lag{"),
            [
                "tokenwatch_kafka_partition_lag{partition=\"0\",topic=\"by_ip\"} 5",
                "tokenwatch_kafka_partition_lag{partition=\"1\",topic=\"by_ip\"} 40",
            ]
        );
        assert_eq!(
            scrape(&m, "tokenwatch_kafka_consumer_lag{"),
            ["tokenwatch_kafka_consumer_lag{topic=\"by_ip\"} 45"]
        );
        assert_eq!(
            scrape(&m, "tokenwatch_kafka_topic_partitions{"),
            ["tokenwatch_kafka_topic_partitions{topic=\"by_ip\"} 4"]
        );
    }

    #[test]
    fn a_revoked_partition_drops_its_series_and_a_late_report_does_not_bring_them_back() {
        let m = Metrics::new();
        let km = KafkaMetrics::register(&m).unwrap();
        km.consume("by_token");
        let t = report(&[(0, 10, 10), (1, 20, 20)]);
        apply_stats(&km, "by_token", Some(&t), &[0, 1]);
        km.snapshot_at("by_token", 0, 100);
        km.snapshot_at("by_token", 1, 100);
        km.set_owned("by_token", 2);
        // Revoke partition 1 as `pre_rebalance` does, then a report taken before it arrives.
        km.revoked("by_token", 1);
        km.set_owned("by_token", 1);
        apply_stats(&km, "by_token", Some(&t), &[0]);
        let text = m.render();
        assert!(!text.contains("partition=\"1\""), "{text}");
        assert!(
            text.contains("tokenwatch_kafka_partition_lag{partition=\"0\",topic=\"by_token\"} 10")
        );
        assert!(text.contains(
            "tokenwatch_kafka_snapshot_timestamp_seconds{partition=\"0\",topic=\"by_token\"} 100"
        ));
        assert!(text.contains("tokenwatch_kafka_consumer_lag{topic=\"by_token\"} 10"));
        assert!(text.contains("tokenwatch_partitions_owned{topic=\"by_token\"} 1"));
        // A topic absent from the report: no lag, and the partition count is left alone.
        apply_stats(&km, "by_token", None, &[0]);
        let text = m.render();
        assert!(text.contains("tokenwatch_kafka_consumer_lag{topic=\"by_token\"} 0"));
        assert!(text.contains("tokenwatch_kafka_topic_partitions{topic=\"by_token\"} 2"));
    }
}
