//! The SQL catalog a Flight SQL server answers from: a DataFusion context holding Strata's tables
//! ([`crate::tables`]) that is rebuilt when the bucket's block list changes, and the read-only,
//! limited context each statement runs in.
//!
//! ```text
//!   refresh(): list blocks ──changed?──► new SessionContext + register_tables ──► swap snapshot
//!   statement(): snapshot's state + own memory pool (--sql.memory-limit), no spilling
//!               ──► parse ──► `?` → `$n` ──► plan ──► read-only check ──► DataFrame
//! ```
//!
//! Read-only: DDL (CREATE/DROP, CREATE EXTERNAL TABLE), DML (INSERT, COPY) and statements (SET,
//! PREPARE, transactions) are refused before anything runs, wherever they appear (also under
//! `EXPLAIN`). Tables by URL are off (DataFusion's default) and the only table functions are
//! DataFusion's generators (`generate_series`, `range`) plus the ones given to
//! [`SqlCatalog::new`] (e.g. `promql`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use datafusion::catalog::TableFunctionImpl;
use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, UnboundedMemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use engine::bucket::Bucket;

use crate::error::{Error, Result};
use crate::head::RecentHeads;
use crate::series_join::sql_session;
use crate::tables::{BlockFilter, HeadInput, TableSet, register_tables};

/// Catalog name Flight SQL clients see.
pub const CATALOG: &str = "strata";
/// Schema holding Strata's tables.
pub const SCHEMA: &str = "public";

/// A named table function registered in every context (the hook the root wiring uses for
/// `promql(...)`, which lives in `query`).
pub type TableFunction = (String, Arc<dyn TableFunctionImpl>);

/// Limits every statement runs under.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementLimits {
    /// Memory one statement may hold (DataFusion memory pool, no spilling); `None`: unbounded.
    pub memory_limit: Option<usize>,
    /// Longest a statement may run, planning and streaming included; `None`: no limit.
    pub timeout: Option<std::time::Duration>,
}

struct Snapshot {
    /// [`SqlCatalog::generation`] of these tables.
    generation: u64,
    ctx: SessionContext,
    /// `Bucket::list_blocks` when the snapshot was built (complete blocks, any format).
    listed: Vec<String>,
    tables: TableSet,
    /// The heads' label names per metric when the snapshot was built (the columns it has for them).
    head_names: BTreeMap<String, BTreeSet<String>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("tables", &self.tables).finish_non_exhaustive()
    }
}

/// Strata's tables over a bucket, refreshed on demand; cheap to clone.
#[derive(Clone)]
pub struct SqlCatalog {
    bucket: Bucket,
    functions: Arc<Vec<TableFunction>>,
    limits: StatementLimits,
    heads: Option<Arc<dyn RecentHeads>>,
    blocks: Option<BlockFilter>,
    current: Arc<RwLock<Arc<Snapshot>>>,
    /// One rebuild at a time.
    rebuilding: Arc<tokio::sync::Mutex<()>>,
    /// Tables built so far (each rebuild is a new generation).
    generation: Arc<AtomicU64>,
    /// Held shared from a statement's choice of snapshot until its heads were read (its physical
    /// plan exists); taken exclusively by [`SqlCatalog::settle`] before a head drops samples.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Statements planned so far (SQL to logical plan).
    planned: Arc<AtomicU64>,
}

/// A statement planned against one generation of the tables, parameters not bound yet.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The statement's plan (placeholders unbound).
    pub frame: DataFrame,
    /// [`SqlCatalog::generation`] it was planned against.
    pub generation: u64,
}

impl std::fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCatalog").field("bucket", &self.bucket.describe()).field("limits", &self.limits).finish()
    }
}

fn df(context: &str) -> impl FnOnce(datafusion::error::DataFusionError) -> Error + '_ {
    move |e| Error::datafusion(context, e)
}

impl SqlCatalog {
    /// A catalog over `bucket` with no tables yet (call [`SqlCatalog::refresh`]); `functions` are
    /// table functions registered beside DataFusion's own.
    pub fn new(bucket: Bucket, functions: Vec<TableFunction>, limits: StatementLimits) -> Result<Self> {
        let catalog = SqlCatalog {
            bucket,
            functions: Arc::new(functions),
            limits,
            heads: None,
            blocks: None,
            current: Arc::new(RwLock::new(Arc::new(Snapshot {
                generation: 0,
                ctx: SessionContext::new(),
                listed: Vec::new(),
                tables: TableSet::default(),
                head_names: BTreeMap::new(),
            }))),
            rebuilding: Arc::default(),
            generation: Arc::default(),
            gate: Arc::default(),
            planned: Arc::default(),
        };
        let empty = catalog.new_context()?;
        catalog.swap(|generation| Snapshot {
            generation,
            ctx: empty,
            listed: Vec::new(),
            tables: TableSet::default(),
            head_names: BTreeMap::new(),
        });
        Ok(catalog)
    }

    /// The same catalog with the recent samples of `heads` in its tables (`strata up`,
    /// `strata receive`): samples not yet in a block of the bucket are read from the heads at each
    /// statement (see [`crate::head`]).
    pub fn with_heads(mut self, heads: Arc<dyn RecentHeads>) -> Self {
        self.heads = Some(heads);
        self
    }

    /// The same catalog over the blocks `keep` accepts only (e.g. a receiver's own blocks).
    pub fn with_block_filter(mut self, keep: BlockFilter) -> Self {
        self.blocks = Some(keep);
        self
    }

    /// The limits statements run under.
    pub fn limits(&self) -> StatementLimits {
        self.limits
    }

    fn new_context(&self) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true);
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(df("creating the SQL runtime"))?;
        let ctx = sql_session(config, runtime);
        for (name, f) in self.functions.iter() {
            ctx.register_udtf(name, Arc::clone(f));
        }
        Ok(ctx)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Makes `make(next generation)` the current snapshot.
    fn swap(&self, make: impl FnOnce(u64) -> Snapshot) {
        let s = Arc::new(make(self.generation.fetch_add(1, Ordering::SeqCst) + 1));
        match self.current.write() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }

    /// Re-reads the bucket's block list (and the heads' label names) and, when the blocks changed
    /// or the heads hold metrics or labels the tables have no columns for, rebuilds the tables.
    /// Returns the number of blocks the tables span now.
    pub async fn refresh(&self) -> Result<usize> {
        Ok(self.rebuild_if_changed().await?.0)
    }

    /// [`SqlCatalog::refresh`], also saying whether the tables were rebuilt.
    async fn rebuild_if_changed(&self) -> Result<(usize, bool)> {
        let _one = self.rebuilding.lock().await;
        let listed = self.bucket.list_blocks().await?;
        let head = match &self.heads {
            Some(h) => Some(HeadInput::read(Arc::clone(h)).await?),
            None => None,
        };
        let old = self.snapshot();
        let covered = head.as_ref().is_none_or(|h| {
            h.names.iter().all(|(m, names)| old.head_names.get(m).is_some_and(|known| names.is_subset(known)))
        });
        if !old.listed.is_empty() && old.listed == listed && covered {
            return Ok((old.tables.blocks.len(), false));
        }
        let ctx = self.new_context()?;
        let tables = register_tables(&ctx, &self.bucket, head.as_ref(), self.blocks.as_ref()).await?;
        let n = tables.blocks.len();
        tracing::info!(blocks = n, metrics = tables.metrics.len(), "SQL tables refreshed");
        let head_names = head.map(|h| h.names).unwrap_or_default();
        self.swap(|generation| Snapshot { generation, ctx, listed, tables, head_names });
        Ok((n, true))
    }

    /// Waits until every statement that chose its tables before now has read the heads (has its
    /// physical plan). A head calls it after [`SqlCatalog::refresh`] showed its new block and before
    /// it drops the block's samples: a statement still on the older tables (without the block)
    /// then has its head samples already, and every later one sees the block.
    pub async fn settle(&self) {
        drop(self.gate.write().await);
    }

    /// A guard to hold from planning a statement ([`SqlCatalog::statement`], or checking a kept
    /// plan's [`Planned::generation`]) until its physical plan exists (the heads are read then):
    /// [`SqlCatalog::settle`] waits for it.
    pub async fn reading(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        Arc::clone(&self.gate).read_owned().await
    }

    /// The tables registered now.
    pub fn tables(&self) -> TableSet {
        self.snapshot().tables.clone()
    }

    /// The current context (catalog listings; statements use [`SqlCatalog::statement`]).
    pub fn context(&self) -> SessionContext {
        self.snapshot().ctx.clone()
    }

    /// Plans `sql` read-only in a context of its own (own memory pool), binding `params` to its
    /// placeholders (`$1`, `$2`, ... or `?` in order).
    ///
    /// With heads, a statement that fails to plan (e.g. naming a metric first seen in a head since
    /// the last refresh) is planned once more after a refresh that rebuilt the tables.
    /// Hold [`SqlCatalog::reading`] from before this call until the frame's physical plan exists.
    pub async fn statement(&self, sql: &str, params: Option<Vec<ScalarValue>>) -> Result<DataFrame> {
        let planned = self.plan(sql).await?;
        bind(planned.frame, params, sql)
    }

    /// The generation of the tables: it changes whenever they are rebuilt, so that a plan kept
    /// from an older generation is known to miss blocks.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// How many statements were planned (SQL to logical plan) so far.
    pub fn planned(&self) -> u64 {
        self.planned.load(Ordering::Relaxed)
    }

    /// Plans `sql` read-only (as [`SqlCatalog::statement`]) without binding its placeholders:
    /// a plan to keep and bind with [`bind`] at each execution while
    /// [`SqlCatalog::generation`] is unchanged.
    pub async fn plan(&self, sql: &str) -> Result<Planned> {
        self.plan_from(sql, self.snapshot()).await
    }

    /// [`SqlCatalog::plan`] whose first attempt uses the tables of `base`.
    async fn plan_from(&self, sql: &str, base: Arc<Snapshot>) -> Result<Planned> {
        let first = self.statement_once(sql, &base).await;
        match first {
            Err(Error::DataFusion { .. }) if self.heads.is_some() => match self.rebuild_if_changed().await {
                // Newer tables than the first attempt's, from this refresh or from another one
                // (after a cut, or the refresh loop's) since the first attempt chose its own:
                // plan once more on those.
                Ok((_, rebuilt)) if rebuilt || self.generation() != base.generation => {
                    self.statement_once(sql, &self.snapshot()).await
                }
                Ok(_) => first,
                Err(e) => {
                    tracing::warn!(error = %e, "refreshing the SQL tables for a statement that failed to plan");
                    first
                }
            },
            other => other,
        }
    }

    /// Plans `sql` on the tables of `base`.
    async fn statement_once(&self, sql: &str, base: &Snapshot) -> Result<Planned> {
        self.planned.fetch_add(1, Ordering::Relaxed);
        let plan = async {
            let sql = number_placeholders(sql)?;
            let pool: Arc<dyn MemoryPool> = match self.limits.memory_limit {
                Some(bytes) => Arc::new(GreedyMemoryPool::new(bytes)),
                None => Arc::new(UnboundedMemoryPool::default()),
            };
            let shared = base.ctx.runtime_env();
            let runtime = RuntimeEnv {
                memory_pool: pool,
                disk_manager: Arc::clone(&shared.disk_manager),
                cache_manager: Arc::clone(&shared.cache_manager),
                object_store_registry: Arc::clone(&shared.object_store_registry),
            };
            let state =
                SessionStateBuilder::new_from_existing(base.ctx.state()).with_runtime_env(Arc::new(runtime)).build();
            let ctx = SessionContext::new_with_state(state);
            let what = statement_context(&sql);
            let plan = ctx.state().create_logical_plan(&sql).await.map_err(df(&what))?;
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
                .verify_plan(&plan)
                .map_err(|e| Error::Forbidden(format!("{what}: {}", e.strip_backtrace())))?;
            let frame = ctx.execute_logical_plan(plan).await.map_err(df(&what))?;
            Ok(Planned { frame, generation: base.generation })
        };
        match self.limits.timeout {
            Some(t) => tokio::time::timeout(t, plan).await.map_err(|_| Error::Timeout(t))?,
            None => plan.await,
        }
    }
}

/// Binds `params` to the placeholders of `frame` (the plan of `sql`); `None` leaves it as is.
pub fn bind(frame: DataFrame, params: Option<Vec<ScalarValue>>, sql: &str) -> Result<DataFrame> {
    match params {
        Some(p) => {
            frame.with_param_values(ParamValues::from(p)).map_err(|e| Error::datafusion(statement_context(sql), e))
        }
        None => Ok(frame),
    }
}

/// The first characters of a statement, to name it in errors.
pub(crate) fn statement_context(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = one_line.chars().take(80).collect();
    if one_line.chars().count() > 80 {
        s.push_str("...");
    }
    format!("statement {s:?}")
}

/// Rewrites JDBC/ODBC-style `?` placeholders into DataFusion's `$1`, `$2`, ... in order of
/// appearance (string literals, identifiers and comments untouched).
fn number_placeholders(sql: &str) -> Result<String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::BadRequest(format!("{}: {e}", statement_context(sql))))?;
    // Byte offset of each line start (locations are 1-based lines and columns in characters).
    let mut line_starts = vec![0usize];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let mut out = String::with_capacity(sql.len() + 8);
    let mut copied = 0usize;
    let mut n = 0usize;
    for t in &tokens {
        if t.token != Token::Placeholder("?".into()) {
            continue;
        }
        let (line, column) = (t.span.start.line as usize, t.span.start.column as usize);
        let Some(&start) = line_starts.get(line.saturating_sub(1)) else { continue };
        let Some((offset, _)) = sql[start..].char_indices().nth(column.saturating_sub(1)) else { continue };
        let at = start + offset;
        if sql.as_bytes().get(at) != Some(&b'?') {
            continue;
        }
        n += 1;
        out.push_str(&sql[copied..at]);
        out.push('$');
        out.push_str(&n.to_string());
        copied = at + 1;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `settle` (before a head drops samples) waits for a statement that chose its tables
    /// earlier until that statement let its reading guard go, and statements planned on a rebuilt
    /// snapshot carry that snapshot's generation.
    #[tokio::test]
    async fn settle_waits_for_statements_that_chose_older_tables() {
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            SqlCatalog::new(Bucket::local(dir.path()).unwrap(), Vec::new(), StatementLimits::default()).unwrap();
        let reading = catalog.reading().await;
        let planned = catalog.plan("SELECT 1").await.unwrap();
        assert_eq!(planned.generation, catalog.generation());
        let settling = tokio::spawn({
            let catalog = catalog.clone();
            async move { catalog.settle().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!settling.is_finished(), "settle returned while a statement was still reading");
        drop(reading);
        tokio::time::timeout(std::time::Duration::from_secs(5), settling).await.unwrap().unwrap();
        // Nothing reading: settles at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), catalog.settle()).await.unwrap();
    }

    #[derive(Debug)]
    struct Heads(std::sync::Mutex<Vec<crate::head::HeadPart>>);

    #[async_trait::async_trait]
    impl RecentHeads for Heads {
        async fn heads(&self) -> Vec<crate::head::HeadPart> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A statement that chose its tables before a metric reached them, while another rebuild
    /// (a cut's, the refresh loop's) added it before this statement's own refresh looked: the
    /// statement is planned again on the newer tables instead of failing with "table not found".
    #[tokio::test]
    async fn a_statement_on_older_tables_uses_a_rebuild_it_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        // A block: the tables are then rebuilt only when the blocks or the heads' names change.
        crate::tables::tests::write(&bucket, ulid::Ulid::from_parts(1, 1), &crate::tables::tests::fleet(4)).await;
        let head = engine::MemSource::new();
        let heads = Arc::new(Heads(std::sync::Mutex::new(Vec::new())));
        let catalog = SqlCatalog::new(bucket, Vec::new(), StatementLimits::default())
            .unwrap()
            .with_heads(Arc::clone(&heads) as Arc<dyn RecentHeads>);
        catalog.refresh().await.unwrap();
        let older = catalog.snapshot();
        head.add(engine::Labels::from_pairs([("__name__", "late"), ("job", "a")]), &[900_000, 915_000], &[1.5, 2.5]);
        heads.0.lock().unwrap().push(crate::head::HeadPart { source: Arc::new(head), block_labels: BTreeMap::new() });
        // The other party's rebuild.
        catalog.refresh().await.unwrap();
        assert!(catalog.generation() > older.generation);
        let planned = catalog.plan_from("SELECT sum(value) FROM late WHERE job = 'a'", older).await.unwrap();
        assert_eq!(planned.generation, catalog.generation());
        let batches = planned.frame.collect().await.unwrap();
        let v = batches[0].column(0).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap().value(0);
        assert_eq!(v, 4.0);
    }

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT * FROM t WHERE a = ? AND b > ?").unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b > $2"
        );
        assert_eq!(
            number_placeholders("SELECT '?', \"?\" -- ?\nFROM t WHERE x = ?").unwrap(),
            "SELECT '?', \"?\" -- ?\nFROM t WHERE x = $1"
        );
        assert_eq!(number_placeholders("SELECT 'é', ? FROM t").unwrap(), "SELECT 'é', $1 FROM t");
        assert_eq!(number_placeholders("SELECT $1").unwrap(), "SELECT $1");
    }
}
