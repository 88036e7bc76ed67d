use super::*;

const EXPOSED: &str = "\
# HELP executor_journal_fsync_seconds Time of one fdatasync of a journal group commit
# TYPE executor_journal_fsync_seconds histogram
executor_journal_fsync_seconds_bucket{le=\"0.0001\"} 10
executor_journal_fsync_seconds_bucket{le=\"0.0002\"} 90
executor_journal_fsync_seconds_bucket{le=\"0.0005\"} 99
executor_journal_fsync_seconds_bucket{le=\"+Inf\"} 100
executor_journal_fsync_seconds_sum 0.0165
executor_journal_fsync_seconds_count 100
executor_journal_batch_records_bucket{le=\"1\"} 7
executor_journal_batch_records_sum 7
executor_journal_batch_records_count 7
";

#[test]
fn a_histogram_is_read_from_its_lines_only() {
    let h = parse_histogram(EXPOSED, FSYNC_METRIC).unwrap();
    assert_eq!(
        h.buckets,
        vec![
            (0.0001, 10),
            (0.0002, 90),
            (0.0005, 99),
            (f64::INFINITY, 100)
        ]
    );
    assert_eq!((h.count, h.sum), (100, 0.0165));
    let other = parse_histogram(EXPOSED, "executor_journal_batch_records").unwrap();
    assert_eq!((other.buckets.len(), other.count), (1, 7));
    assert_eq!(parse_histogram(EXPOSED, "executor_journal_queue"), None);
    assert_eq!(
        parse_histogram(
            "executor_journal_fsync_seconds_bucket{le=\"x\"} 1\n",
            FSYNC_METRIC
        ),
        None
    );
}

#[test]
fn quantiles_are_interpolated_within_their_bucket_as_prometheus_does() {
    let h = parse_histogram(EXPOSED, FSYNC_METRIC).unwrap();
    // Rank 50 is the 40th of the 80 observations between 100 and 200 µs.
    let p50 = h.quantile(0.5).unwrap();
    assert!((p50 - 0.000_15).abs() < 1e-12, "{p50}");
    // Rank 5 is the 5th of the 10 below 100 µs, counted up from 0.
    let p05 = h.quantile(0.05).unwrap();
    assert!((p05 - 0.000_05).abs() < 1e-12, "{p05}");
    // A rank in +Inf gives the highest finite bound.
    assert_eq!(h.quantile(0.999), Some(0.0005));
    let times = SyncTimes::of(&h).unwrap();
    assert!((times.mean_us - 165.0).abs() < 1e-6, "{times:?}");
    assert!((times.p99_us - 500.0).abs() < 1e-6, "{times:?}");
    let empty = Histogram {
        buckets: vec![(f64::INFINITY, 0)],
        count: 0,
        sum: 0.0,
    };
    assert_eq!((empty.quantile(0.5), SyncTimes::of(&empty)), (None, None));
}

#[tokio::test]
async fn the_metrics_body_is_fetched_and_another_status_is_an_error() {
    async fn serve(answer: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).await.unwrap();
            assert!(request[..n].starts_with(b"GET /metrics HTTP/1.0\r\n"));
            stream.write_all(answer).await.unwrap();
        });
        addr
    }
    let ok = serve(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nup 1\n").await;
    assert_eq!(metrics(ok, Duration::from_secs(5)).await.unwrap(), "up 1\n");
    let missing = serve(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
    let err = metrics(missing, Duration::from_secs(5)).await.unwrap_err();
    assert!(err.to_string().contains("Some(404)"), "{err}");
}
