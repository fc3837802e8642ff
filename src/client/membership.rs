//! `ydht cluster join|leave|status`: online membership changes, through the
//! gateway's `/membership…` endpoints with the cluster secret. `join` and
//! `leave` show a progress bar until the data has moved (`--no-wait` returns
//! at once); `status` lists the members with their state and the progress of
//! a change in progress.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;

use super::output::{print_json, print_line, table};
use super::{ClientArgs, ClientFlags, Context, GatewayClient, OperatorArgs};
use crate::config::Secret;
use crate::membership::{JoinRequest, LeaveRequest, Membership};
use crate::proto::CLUSTER_SECRET_HEADER;
use crate::units::count_of;

/// How often a waiting command polls the membership.
const POLL: Duration = Duration::from_millis(500);

/// `ydht cluster …`.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving
    /// (the node must run with --join, which registers it by itself)
    Join(JoinArgs),
    /// Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)
    Leave(LeaveArgs),
    /// The members, their states (joining, active, leaving, down) and the progress of a change
    Status(ClusterStatusArgs),
}

/// Arguments of `ydht cluster join`.
#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Base URL of the running node, as the gateway and the other nodes reach it
    #[arg(value_name = "NODE_URL")]
    pub node_url: String,
    /// The node's id [default: asked from the node's /health]
    #[arg(long, value_name = "NODE_ID")]
    pub id: Option<String>,
    /// Return once the change is recorded, without waiting for the data to move
    #[arg(long)]
    pub no_wait: bool,
    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway and the config dir.
    #[command(flatten)]
    pub client: GatewayClient,
}

/// Arguments of `ydht cluster leave`.
#[derive(Args, Debug)]
pub struct LeaveArgs {
    /// The node's id (see `ydht cluster status`)
    #[arg(value_name = "NODE_ID")]
    pub node_id: String,
    /// The node is gone for good: rebuild its keys from the other copies instead of from it
    #[arg(long)]
    pub force: bool,
    /// Return once the change is recorded, without waiting for the data to move
    #[arg(long)]
    pub no_wait: bool,
    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway and the config dir.
    #[command(flatten)]
    pub client: GatewayClient,
}

/// Arguments of `ydht cluster status`.
#[derive(Args, Debug)]
pub struct ClusterStatusArgs {
    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway and the config dir.
    #[command(flatten)]
    pub client: GatewayClient,
}

impl ClientFlags for ClusterCommand {
    fn given(&self) -> ClientArgs {
        self.client().given()
    }
}

impl ClusterCommand {
    fn client(&self) -> &GatewayClient {
        match self {
            Self::Join(args) => &args.client,
            Self::Leave(args) => &args.client,
            Self::Status(args) => &args.client,
        }
    }

    /// Runs the subcommand.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        match self {
            Self::Join(args) => {
                let secret = args.operator.require_cluster_secret("ydht cluster join")?;
                let request = JoinRequest { url: args.node_url.trim().trim_end_matches('/').to_string(), id: args.id };
                let membership = call(context, &secret, Method::POST, "join", Some(&request)).await?;
                finish(context, &secret, membership, args.no_wait).await
            }
            Self::Leave(args) => {
                let secret = args.operator.require_cluster_secret("ydht cluster leave")?;
                let request = LeaveRequest { id: args.node_id, force: args.force };
                let membership = call(context, &secret, Method::POST, "leave", Some(&request)).await?;
                finish(context, &secret, membership, args.no_wait).await
            }
            Self::Status(args) => {
                let secret = args.operator.require_cluster_secret("ydht cluster status")?;
                let membership = fetch(context, &secret).await?;
                if context.json() {
                    return print_json(&membership);
                }
                print_line(&render(&membership))
            }
        }
    }
}

/// The gateway's `GET /membership`.
pub async fn fetch(context: &Context, secret: &Secret) -> anyhow::Result<Membership> {
    call::<()>(context, secret, Method::GET, "", None).await
}

async fn call<T: Serialize>(
    context: &Context,
    secret: &Secret,
    method: Method,
    action: &str,
    body: Option<&T>,
) -> anyhow::Result<Membership> {
    let path: Vec<&str> = std::iter::once("membership").chain((!action.is_empty()).then_some(action)).collect();
    let mut request =
        context.api.request(method, &context.gateway, &path)?.header(CLUSTER_SECRET_HEADER, secret.expose());
    if let Some(body) = body {
        request = request.json(body);
    }
    context
        .api
        .send_json(&context.gateway, request)
        .await
        .map_err(|error| super::cluster::secret_refused(context, error))
}

/// Prints the membership after a change, or waits (with a progress bar) until it has settled.
async fn finish(context: &Context, secret: &Secret, membership: Membership, no_wait: bool) -> anyhow::Result<()> {
    if no_wait || membership.is_settled() {
        if context.json() {
            return print_json(&membership);
        }
        return print_line(&render(&membership));
    }
    let bar = (!context.json()).then(|| {
        let bar = indicatif::ProgressBar::new(1);
        bar.set_style(
            indicatif::ProgressStyle::with_template("moving data  [{bar:30}] {pos}/{len} segments  {msg}")
                .expect("constant template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut membership = membership;
    while !membership.is_settled() {
        if let Some(bar) = &bar {
            let (done, total) = membership.arcs_moved();
            let (nodes_done, nodes) = membership.rebalance_done();
            bar.set_length(total.max(1));
            bar.set_position(done);
            bar.set_message(format!("{nodes_done}/{nodes} nodes done"));
        }
        tokio::time::sleep(POLL).await;
        membership = fetch(context, secret).await?;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if context.json() {
        return print_json(&membership);
    }
    print_line(&format!("membership settled at version {}\n{}", membership.version, render(&membership)))
}

/// The members as a table, with a line on the change in progress.
pub fn render(membership: &Membership) -> String {
    let mut members = table(["NODE", "URL", "STATE", "SINCE", "REBALANCE"]);
    for member in &membership.members {
        let progress = member
            .progress
            .filter(|progress| progress.version == membership.version && !membership.is_settled())
            .map_or_else(
                || "-".to_string(),
                |progress| {
                    if progress.done {
                        format!("done ({})", count_of(progress.keys_moved, "key", "keys"))
                    } else {
                        format!(
                            "{}/{} segments, {}",
                            progress.arcs_done,
                            progress.arcs_total,
                            count_of(progress.keys_moved, "key", "keys")
                        )
                    }
                },
            );
        members.add_row([
            member.id.clone(),
            member.url.clone(),
            member.state.as_str().to_string(),
            member.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            progress,
        ]);
    }
    let summary = if membership.members.is_empty() {
        "no members yet (the gateway seeds them from YDHT_NODES when it starts)".to_string()
    } else if membership.is_settled() {
        format!("membership version {}: settled", membership.version)
    } else {
        let (done, total) = membership.arcs_moved();
        let (nodes_done, nodes) = membership.rebalance_done();
        format!(
            "membership version {}: rebalancing {} ({done}/{total} segments; {nodes_done}/{nodes} nodes done)",
            membership.version,
            progress_bar(done, total, 20)
        )
    };
    format!("{members}\n{summary}")
}

/// A text bar like `[=====>    ]`.
pub fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { 0 } else { ((done.min(total) as f64 / total as f64) * width as f64) as usize };
    format!("[{}{}]", "=".repeat(filled), " ".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Member, MemberState, RebalanceProgress};

    #[test]
    fn status_shows_states_and_progress() {
        let member = |id: &str, state, progress| Member {
            id: id.into(),
            url: format!("http://{id}"),
            state,
            since: chrono::Utc::now(),
            progress,
        };
        let membership = Membership {
            version: 5,
            members: vec![
                member(
                    "node-1",
                    MemberState::Active,
                    Some(RebalanceProgress { version: 5, done: true, ..Default::default() }),
                ),
                member(
                    "node-4",
                    MemberState::Joining,
                    Some(RebalanceProgress { version: 5, arcs_total: 10, arcs_done: 5, keys_moved: 42, done: false }),
                ),
            ],
        };
        let text = render(&membership);
        assert!(text.contains("joining") && text.contains("5/10 segments, 42 keys"), "{text}");
        assert!(text.contains("rebalancing [==========          ]"), "{text}");
        // Headers in capitals like every other table, times in UTC with their zone, "-" for nothing.
        assert!(text.contains("NODE") && text.contains("SINCE") && text.contains("REBALANCE"), "{text}");
        let since = membership.members[0].since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert!(since.ends_with('Z') && text.contains(&since), "{text}");
        let settled = Membership { version: 5, members: vec![member("node-1", MemberState::Active, None)] };
        let text = render(&settled);
        let row = text.lines().find(|line| line.contains("node-1")).unwrap();
        assert!(row.trim_end_matches(['│', ' ']).ends_with('-'), "{text}");
        assert_eq!(progress_bar(0, 0, 4), "[    ]");
        assert_eq!(progress_bar(9, 3, 4), "[====]");
    }
}
