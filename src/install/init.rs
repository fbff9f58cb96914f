//! `repctl init`: the repctl schema, queue, apply path and one foreign server per peer on every node.

use anyhow::{Context, Result, bail};
use minijinja::context;
use postgres::Client;
use serde_json::{Map, Value as Json};

use super::{Script, Secret};
use crate::config::{Config, Node};
use crate::db;
use crate::render::{self, names};

/// How long a synchronous commit waits for a peer before keeping the changes queued.
pub const FLUSH_TIMEOUT: &str = "10 seconds";
/// How long a commit's apply on a peer waits for a row lock. Two nodes committing changes of the
/// same row at once each hold the row their own flush is shipping, and each apply waits for the
/// other's: neither can go on until one gives up, and the changes of that one are queued. Short,
/// so hot rows written on two masters cost a writer at most this; a row held longer by a
/// transaction on the peer falls back to the queue as well (2 s before issue 15).
pub const FLUSH_LOCK_TIMEOUT: &str = "100ms";

/// What init needs to know about a node before rendering.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// Schema of an already installed dblink extension; None installs it into `repctl`.
    pub dblink_schema: Option<String>,
    /// The node's `server_version_num`: the template decides what a version needs.
    pub server_version_num: i32,
    /// The repctl schema version the node records, None before its first init: init migrates
    /// from it (templates/node/migrations.sql).
    pub installed_schema: Option<i32>,
}

/// Reads a node's facts and checks what init needs there.
pub fn node_facts(node: &Node, client: &mut Client) -> Result<NodeFacts> {
    let server_version_num: i32 = client
        .query_one("select current_setting('server_version_num')::int4", &[])?
        .get(0);
    let installed_schema = db::installed_schema(client)?;
    if let Some(installed) = installed_schema {
        db::refuse_newer_schema(&node.name, installed)?;
    }
    let dblink_schema: Option<String> = client
        .query_opt(
            "select n.nspname::text from pg_extension e join pg_namespace n on n.oid = e.extnamespace
              where e.extname = 'dblink'",
            &[],
        )?
        .map(|r| r.get(0));
    let available: bool = client
        .query_one(
            "select exists (select from pg_available_extensions where name = 'dblink')",
            &[],
        )?
        .get(0);
    if dblink_schema.is_none() && !available {
        bail!(
            "node {}: the dblink extension is not available; install PostgreSQL's contrib package there",
            node.name
        );
    }
    if let Some(role) = node.peer.get("user") {
        let exists: bool = client
            .query_one(
                "select exists (select from pg_roles where rolname = $1)",
                &[&role],
            )?
            .get(0);
        if !exists {
            bail!(
                "node {}: role {role:?} (the user in its peer_dsn) does not exist there; create it or fix peer_dsn",
                node.name
            );
        }
    }
    Ok(NodeFacts {
        dblink_schema,
        server_version_num,
        installed_schema,
    })
}

/// The transaction-local setting that carries user-mapping options (passwords) to the init script,
/// so they are bound as a parameter and never part of SQL text a server could log.
pub const USER_MAPPINGS_SETTING: &str = "repctl.user_mappings";

/// Renders the script that creates (or checks) the agent role on a node; it commits on its own
/// before the init script runs.
pub fn render_agent(config: &Config, node: &Node) -> Result<Script> {
    let sql = render::render(
        "node/agent.sql",
        &context! {
            node => node.name.clone(),
            agent => config.agent.role.clone(),
            superuser => config.agent.superuser,
        },
    )?;
    Ok(Script {
        node: node.name.clone(),
        sql,
        secret: None,
    })
}

/// Renders a node's init script; the user mappings' options travel beside it as a secret.
pub fn render_init(config: &Config, node: &Node, facts: &NodeFacts) -> Result<Script> {
    let mut mappings = Map::new();
    let mut masked = Map::new();
    // The user mapping of the foreign server reaching `target`, real and masked.
    let mut add_mapping = |server: &str, target: &Node| {
        let mut mapping = target.peer.user_mapping_options();
        mappings.insert(server.to_string(), json_value(&mapping));
        mapping
            .iter_mut()
            .filter(|(k, _)| crate::conninfo::is_secret(k))
            .for_each(|(_, v)| *v = "********".into());
        masked.insert(server.to_string(), json_value(&mapping));
    };
    let peers: Vec<_> = config
        .peers_of(node)
        .map(|peer| {
            let server = names::server(&peer.name);
            add_mapping(&server, peer);
            context! {
                name => peer.name.clone(),
                server,
                partition => names::queue_partition(&peer.name),
                counter => names::delivered_counter(&peer.name),
                server_options => json_object(&peer.peer.server_options()),
            }
        })
        .collect();
    // This node as its peers reach it, for the sessions the template may open to itself.
    let self_server = names::server(&node.name);
    add_mapping(&self_server, node);
    let sql = render::render(
        "node/init.sql",
        &context! {
            version => env!("CARGO_PKG_VERSION"),
            schema_version => db::SCHEMA_VERSION,
            installed_schema => facts.installed_schema,
            node => node.name.clone(),
            dblink_installed => facts.dblink_schema.is_some(),
            dblink_schema => facts.dblink_schema.clone().unwrap_or_else(|| "repctl".into()),
            peer_role => node.peer.get("user"),
            agent => config.agent.role.clone(),
            flush_timeout => FLUSH_TIMEOUT,
            flush_lock_timeout => FLUSH_LOCK_TIMEOUT,
            server_version_num => facts.server_version_num,
            self_server,
            self_server_options => json_object(&node.peer.server_options()),
            user_mappings_setting => USER_MAPPINGS_SETTING,
            peers,
        },
    )?;
    Ok(Script {
        node: node.name.clone(),
        sql,
        secret: Some(Secret {
            setting: USER_MAPPINGS_SETTING,
            value: Json::Object(mappings).to_string(),
            masked: Json::Object(masked).to_string(),
        }),
    })
}

fn json_object(pairs: &[(String, String)]) -> String {
    json_value(pairs).to_string()
}

fn json_value(pairs: &[(String, String)]) -> Json {
    Json::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

/// Connects to every node, failing with the node's name when one is unreachable.
pub fn connect_all(config: &Config) -> Result<Vec<(String, Client)>> {
    config
        .nodes
        .iter()
        .map(|n| {
            Ok((
                n.name.clone(),
                db::connect(n).with_context(|| "every node must be reachable for this command")?,
            ))
        })
        .collect()
}
