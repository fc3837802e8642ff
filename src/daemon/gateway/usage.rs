//! Usage accounting: requests and bytes per tenant and operation, summed in
//! memory and sent to the users service's `POST /usage` in batches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Secret;
use crate::proto::{CLUSTER_SECRET_HEADER, UsageBatch, UsageReport};
use crate::shutdown::Shutdown;
use crate::sync::Lock;

/// How often the totals are flushed.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(3);

/// Rows kept while the users service is unreachable; beyond that new tenants are not counted.
const MAX_ROWS: usize = 100_000;

/// Totals since the last flush. A std `Mutex`: held for a map update, never across an `.await`.
#[derive(Debug, Default)]
pub struct UsageLog {
    rows: Mutex<HashMap<(i64, &'static str), UsageReport>>,
}

impl UsageLog {
    /// Adds one request of `operation` (`put`, `get`, `delete`, `list`).
    pub fn record(&self, user_id: i64, operation: &'static str, bytes_in: u64, bytes_out: u64) {
        let mut rows = self.rows.locked();
        if rows.len() >= MAX_ROWS && !rows.contains_key(&(user_id, operation)) {
            tracing::warn!("usage buffer full; is the users service down?");
            return;
        }
        let row = rows.entry((user_id, operation)).or_insert_with(|| UsageReport {
            user_id,
            operation: operation.to_string(),
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
        });
        row.requests += 1;
        row.bytes_in += bytes_in;
        row.bytes_out += bytes_out;
    }

    /// Takes every row, leaving the log empty.
    pub fn take(&self) -> UsageBatch {
        let rows = std::mem::take(&mut *self.rows.locked());
        let mut records: Vec<UsageReport> = rows.into_values().collect();
        records.sort_by(|a, b| (a.user_id, &a.operation).cmp(&(b.user_id, &b.operation)));
        UsageBatch { records }
    }

    /// Puts rows back after a failed flush, adding them to anything recorded meanwhile.
    pub fn restore(&self, batch: UsageBatch) {
        let mut rows = self.rows.locked();
        for report in batch.records {
            let operation = operation_name(&report.operation);
            let row = rows.entry((report.user_id, operation)).or_insert_with(|| UsageReport {
                requests: 0,
                bytes_in: 0,
                bytes_out: 0,
                ..report.clone()
            });
            row.requests += report.requests;
            row.bytes_in += report.bytes_in;
            row.bytes_out += report.bytes_out;
        }
    }

    /// Sends what was recorded; on failure keeps it for the next flush.
    pub async fn flush(&self, http: &reqwest::Client, users_url: &str, secret: &Secret) {
        let batch = self.take();
        if batch.records.is_empty() {
            return;
        }
        let sent = http
            .post(format!("{users_url}/usage"))
            .header(CLUSTER_SECRET_HEADER, secret.expose())
            .json(&batch)
            .send()
            .await
            .map_err(super::nodes::describe)
            .and_then(|response| {
                if response.status().is_success() { Ok(()) } else { Err(format!("answered {}", response.status())) }
            });
        if let Err(error) = sent {
            tracing::warn!(%error, users_url, "could not send usage; keeping it for the next flush");
            self.restore(batch);
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] and once more at shutdown.
    pub async fn flush_loop(&self, http: reqwest::Client, users_url: String, secret: Secret, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => self.flush(&http, &users_url, &secret).await,
                _ = shutdown.wait() => {
                    self.flush(&http, &users_url, &secret).await;
                    return;
                }
            }
        }
    }
}

fn operation_name(operation: &str) -> &'static str {
    match operation {
        "put" => "put",
        "get" => "get",
        "delete" => "delete",
        _ => "list",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_summed_per_user_and_operation() {
        let log = UsageLog::default();
        log.record(1, "put", 10, 0);
        log.record(1, "put", 5, 0);
        log.record(1, "get", 0, 15);
        log.record(2, "put", 1, 0);
        let batch = log.take();
        assert_eq!(batch.records.len(), 3);
        let put = &batch.records[1];
        assert_eq!((put.user_id, put.operation.as_str(), put.requests, put.bytes_in), (1, "put", 2, 15));
        assert!(log.take().records.is_empty());
        log.record(1, "put", 1, 0);
        log.restore(batch);
        let merged = log.take();
        let put = merged.records.iter().find(|r| r.user_id == 1 && r.operation == "put").unwrap();
        assert_eq!((put.requests, put.bytes_in), (3, 16));
    }
}
