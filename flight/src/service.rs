//! The Arrow Flight SQL service (arrow-flight's [`FlightSqlService`]) over a [`SqlCatalog`].
//!
//! ```text
//!   GetFlightInfo(CommandStatementQuery sql)  ──plan──► FlightInfo{schema, ticket = sql}
//!   DoGet(TicketStatementQuery sql)           ──plan, execute──► schema + batches (streamed)
//!   CreatePreparedStatement(sql) ──► handle, dataset and parameter schemas
//!   DoPut(CommandPreparedStatementQuery + one parameter row) ──► binds; DoGet runs it
//!   GetCatalogs / GetDbSchemas / GetTables / GetTableTypes / GetSqlInfo / GetXdbcTypeInfo
//! ```
//!
//! Every endpoint announces exactly the schema its DoGet streams (ADBC checks): result columns
//! are sent without dictionaries, with the logical plan's schema (DoGet casts each batch to it).
//! Statements are
//! stateless (the ticket carries the SQL); prepared statements live in memory until closed, with
//! the logical plan made at the prepare (up to 256 of them keep one): GetFlightInfo and DoGet bind
//! the parameters to it instead of planning the SQL again, unless the tables were rebuilt since
//! (new blocks), then they plan anew. The physical plan is made at DoGet only, once per execution,
//! and reads the heads' recent samples there ([`crate::head::read_heads`]); GetFlightInfo plans
//! nothing physical.
//! Errors reach the client as gRPC statuses naming the statement ([`crate::Error::to_status`]);
//! a failing statement never stops the server.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    Nullable, ProstMessageExt, Searchable, SqlInfo, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::{CATALOG, Planned, SqlCatalog, bind, statement_context};
use crate::error::{Error, Result};
use crate::head::read_heads;
use crate::metrics::FlightSqlMetrics;

/// Most prepared statements held open at once (per server).
const MAX_PREPARED: usize = 10_000;
/// Most prepared statements that keep their plan (a logical plan and the session state it was
/// planned in); beyond, a prepared statement is planned again at each use.
const MAX_KEPT_PLANS: usize = 256;

type DoGetStream = Pin<Box<dyn Stream<Item = std::result::Result<arrow_flight::FlightData, Status>> + Send>>;

/// A prepared statement: its SQL, the parameters bound to it, and the plan made when it was
/// prepared (kept while the tables are the same generation; dropped on close).
#[derive(Debug, Clone)]
struct Prepared {
    sql: String,
    params: Option<Vec<ScalarValue>>,
    plan: Option<Planned>,
}

/// Strata's Flight SQL service; serve it with [`crate::server`].
#[derive(Clone)]
pub struct StrataFlightSql {
    catalog: SqlCatalog,
    metrics: FlightSqlMetrics,
    prepared: Arc<Mutex<HashMap<String, Prepared>>>,
    next_handle: Arc<AtomicU64>,
    sql_info: Arc<SqlInfoData>,
    xdbc_info: Arc<XdbcTypeInfoData>,
}

impl std::fmt::Debug for StrataFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrataFlightSql").field("catalog", &self.catalog).finish_non_exhaustive()
    }
}

impl StrataFlightSql {
    /// The schemas of Strata's catalog (what GetDbSchemas and GetTables list), by name.
    fn schemas(&self) -> Vec<(String, Arc<dyn SchemaProvider>)> {
        let Some(cat) = self.catalog.context().catalog(CATALOG) else { return Vec::new() };
        cat.schema_names().into_iter().filter_map(|n| cat.schema(&n).map(|s| (n, s))).collect()
    }

    /// A service answering from `catalog`, counting into `metrics`.
    pub fn new(catalog: SqlCatalog, metrics: FlightSqlMetrics) -> Result<Self> {
        Ok(StrataFlightSql {
            catalog,
            metrics,
            prepared: Arc::default(),
            next_handle: Arc::new(AtomicU64::new(1)),
            sql_info: Arc::new(sql_info()?),
            xdbc_info: Arc::new(xdbc_info()?),
        })
    }

    /// The plan of prepared statement `p` with its parameters bound: the one kept from the
    /// prepare while the tables did not change since, else a new one.
    async fn prepared_frame(&self, p: Prepared) -> Result<DataFrame> {
        match p.plan {
            Some(plan) if plan.generation == self.catalog.generation() => bind(plan.frame, p.params, &p.sql),
            _ => self.catalog.statement(&p.sql, p.params).await,
        }
    }

    /// Runs `frame` (the plan of `sql`, from [`SqlCatalog::statement`] or a prepared statement),
    /// streaming its batches as Flight data under the statement limits. The heads' samples are
    /// read here, once, into the statement's memory pool (before the first batch is streamed);
    /// `reading` (taken before `frame` was planned) is let go once they are read.
    async fn run(
        &self,
        sql: &str,
        frame: DataFrame,
        reading: tokio::sync::OwnedRwLockReadGuard<()>,
        started: Instant,
    ) -> Result<DoGetStream> {
        let limits = self.catalog.limits();
        let deadline = limits.timeout.map(|t| tokio::time::Instant::now() + t);
        let what = statement_context(sql);
        let schema = result_schema(&frame);
        let task_ctx = Arc::new(frame.task_ctx());
        let prepare = async {
            let plan = frame.create_physical_plan().await.map_err(|e| Error::datafusion(&what, e))?;
            read_heads(&plan, task_ctx.memory_pool()).await.map_err(|e| Error::datafusion(&what, e))?;
            Ok::<_, Error>(plan)
        };
        let plan = match deadline {
            Some(d) => tokio::time::timeout_at(d, prepare)
                .await
                .map_err(|_| Error::Timeout(limits.timeout.unwrap_or_default()))??,
            None => prepare.await?,
        };
        drop(reading);
        let stream =
            datafusion::physical_plan::execute_stream(plan, task_ctx).map_err(|e| Error::datafusion(&what, e))?;
        let batches =
            limited(stream, Arc::clone(&schema), what, deadline, limits.timeout, self.metrics.clone(), started);
        let flight = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
        Ok(Box::pin(flight))
    }

    fn prepared(&self, handle: &[u8]) -> std::result::Result<Prepared, Status> {
        let key = String::from_utf8_lossy(handle).to_string();
        let map = self.prepared.lock().map_err(|_| Status::internal("prepared statements lock poisoned"))?;
        map.get(&key)
            .cloned()
            .ok_or_else(|| Status::invalid_argument(format!("unknown prepared statement handle {key:?}")))
    }

    fn count<T>(&self, r: Result<T>) -> std::result::Result<T, Status> {
        r.map_err(|e| {
            self.metrics.statement_failed(&e);
            tracing::debug!(error = %e, "Flight SQL statement failed");
            e.to_status()
        })
    }
}

/// The schema the results of `frame` are sent with (GetFlightInfo announces it without a physical
/// plan, so without reading the heads; DoGet casts every batch to it).
fn result_schema(frame: &DataFrame) -> SchemaRef {
    wire_schema(frame.schema().as_arrow())
}

/// The schema results are sent with: dictionaries replaced by their values (what the encoder
/// sends), metadata dropped.
fn wire_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) => Field::new(f.name(), v.as_ref().clone(), f.is_nullable()),
            _ => f.as_ref().clone().with_metadata(Default::default()),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Casts a result batch to the announced schema.
fn to_wire(batch: &RecordBatch, schema: &SchemaRef) -> std::result::Result<RecordBatch, FlightError> {
    let columns: Vec<ArrayRef> =
        batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { arrow::compute::cast(c, f.data_type()) }
            })
            .collect::<std::result::Result<_, _>>()?;
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), columns, &opts)?)
}

/// The statement's batches under its deadline, counted into the metrics.
fn limited(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
    what: String,
    deadline: Option<tokio::time::Instant>,
    timeout: Option<std::time::Duration>,
    metrics: FlightSqlMetrics,
    started: Instant,
) -> impl Stream<Item = std::result::Result<RecordBatch, FlightError>> + Send {
    struct State {
        stream: Option<SendableRecordBatchStream>,
        schema: SchemaRef,
        what: String,
        deadline: Option<tokio::time::Instant>,
        timeout: Option<std::time::Duration>,
        metrics: FlightSqlMetrics,
        started: Instant,
    }
    let state = State { stream: Some(stream), schema, what, deadline, timeout, metrics, started };
    futures::stream::unfold(state, |mut s| async move {
        let stream = s.stream.as_mut()?;
        let next = match s.deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    s.stream = None;
                    let e = Error::Timeout(s.timeout.unwrap_or_default());
                    s.metrics.statement_failed(&e);
                    return Some((Err(FlightError::Tonic(Box::new(e.to_status()))), s));
                }
            },
            None => stream.next().await,
        };
        match next {
            Some(Ok(batch)) => {
                s.metrics.rows_streamed(batch.num_rows());
                let out = to_wire(&batch, &s.schema);
                Some((out, s))
            }
            Some(Err(e)) => {
                s.stream = None;
                let e = Error::datafusion(&s.what, e);
                s.metrics.statement_failed(&e);
                Some((Err(FlightError::Tonic(Box::new(e.to_status()))), s))
            }
            None => {
                s.stream = None;
                s.metrics.statement_done(s.started.elapsed().as_secs_f64());
                None
            }
        }
    })
}

fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> std::result::Result<FlightInfo, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the result schema: {e}")))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor))
}

/// The FlightInfo of a metadata command: its schema, the command itself as the ticket.
fn command_info(
    schema: &Schema,
    cmd: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> std::result::Result<Response<FlightInfo>, Status> {
    Ok(Response::new(flight_info(schema, cmd.as_any().encode_to_vec(), request.into_inner())?))
}

fn batch_stream(batch: std::result::Result<RecordBatch, FlightError>) -> std::result::Result<DoGetStream, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("building a metadata result: {e}")))?;
    let schema = batch.schema();
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(Status::from);
    Ok(Box::pin(s))
}

fn schema_ipc(schema: &Schema) -> std::result::Result<bytes::Bytes, Status> {
    let IpcMessage(b) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(format!("encoding a schema: {e}")))?;
    Ok(b)
}

/// Flight SQL's table type of a DataFusion table: Strata's tables are `TABLE`, views of the
/// information schema `VIEW`.
fn table_type(schema_name: &str, provider: &dyn TableProvider) -> &'static str {
    match (schema_name, provider.table_type()) {
        ("information_schema", _) => "VIEW",
        (_, TableType::Temporary) => "LOCAL TEMPORARY",
        _ => "TABLE",
    }
}

fn sql_info() -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Strata");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierCase, 2i32); // case-insensitive (folded to lower case unless quoted)
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlQuotedIdentifierCase, 1i32); // case-sensitive
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().map_err(|e| Error::flight("building SqlInfo", e))
}

fn xdbc_info() -> Result<XdbcTypeInfoData> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("BOOLEAN", XdbcDataType::XdbcBit, None),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(15)),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None),
    ];
    for (name, t, size) in types {
        let numeric = size.is_some();
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type: t,
            column_size: size,
            literal_prefix: if name == "VARCHAR" || name == "TIMESTAMP" { Some("'".into()) } else { None },
            literal_suffix: if name == "VARCHAR" || name == "TIMESTAMP" { Some("'".into()) } else { None },
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: name == "VARCHAR",
            searchable: Searchable::Full,
            unsigned_attribute: if numeric { Some(false) } else { None },
            fixed_prec_scale: false,
            auto_increment: if numeric { Some(false) } else { None },
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: t,
            datetime_subcode: None,
            num_prec_radix: if numeric { Some(10) } else { None },
            interval_precision: None,
        });
    }
    b.build().map_err(|e| Error::flight("building XdbcTypeInfo", e))
}

#[tonic::async_trait]
impl FlightSqlService for StrataFlightSql {
    type FlightService = StrataFlightSql;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<
        Response<Pin<Box<dyn Stream<Item = std::result::Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // Authentication (if any) happened in the interceptor: the handshake only acknowledges.
        let out = futures::stream::iter(vec![Ok(HandshakeResponse::default())]);
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let frame = self.count(self.catalog.statement(&query.query, None).await)?;
        let schema = result_schema(&frame);
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        Ok(Response::new(flight_info(&schema, ticket.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8 SQL"))?;
        let started = Instant::now();
        let reading = self.catalog.reading().await;
        let frame = self.count(self.catalog.statement(&sql, None).await)?;
        Ok(Response::new(self.count(self.run(&sql, frame, reading, started).await)?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let planned = self.count(self.catalog.plan(&query.query).await)?;
        let frame = &planned.frame;
        let dataset = result_schema(frame);
        let params = frame
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", statement_context(&query.query))))?;
        let mut names: Vec<(usize, String, Option<DataType>)> = params
            .into_iter()
            .map(|(k, t)| (k.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX), k, t))
            .collect();
        names.sort();
        let param_schema = Schema::new(
            names.into_iter().map(|(_, k, t)| Field::new(k, t.unwrap_or(DataType::Null), true)).collect::<Vec<_>>(),
        );
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed).to_string();
        {
            let mut map = self.prepared.lock().map_err(|_| Status::internal("prepared statements lock poisoned"))?;
            if map.len() >= MAX_PREPARED {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_PREPARED} prepared statements are open: close some first"
                )));
            }
            let kept = map.values().filter(|p| p.plan.is_some()).count();
            let plan = (kept < MAX_KEPT_PLANS).then_some(planned);
            map.insert(handle.clone(), Prepared { sql: query.query, params: None, plan });
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: schema_ipc(&dataset)?,
            parameter_schema: schema_ipc(&param_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> std::result::Result<(), Status> {
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        let mut map = self.prepared.lock().map_err(|_| Status::internal("prepared statements lock poisoned"))?;
        map.remove(&key);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<DoPutPreparedStatementResult, Status> {
        let mut p = self.prepared(&query.prepared_statement_handle)?;
        let stream = FlightRecordBatchStream::new_from_flight_data(request.into_inner().map_err(FlightError::from));
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(Status::from)?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "{} parameter rows bound to {}: only one set of parameters per execution is supported",
                rows,
                statement_context(&p.sql)
            )));
        }
        let mut params = Vec::new();
        if let Some(b) = batches.iter().find(|b| b.num_rows() == 1) {
            for (i, c) in b.columns().iter().enumerate() {
                params.push(
                    ScalarValue::try_from_array(c, 0)
                        .map_err(|e| Status::invalid_argument(format!("parameter {}: {e}", i + 1)))?,
                );
            }
        }
        p.params = Some(params);
        let mut map = self.prepared.lock().map_err(|_| Status::internal("prepared statements lock poisoned"))?;
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        map.insert(key, p);
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let p = self.prepared(&cmd.prepared_statement_handle)?;
        let frame = self.count(self.prepared_frame(p).await)?;
        let schema = result_schema(&frame);
        Ok(Response::new(flight_info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let started = Instant::now();
        let p = self.prepared(&query.prepared_statement_handle)?;
        let sql = p.sql.clone();
        let reading = self.catalog.reading().await;
        let frame = self.count(self.prepared_frame(p).await)?;
        Ok(Response::new(self.count(self.run(&sql, frame, reading, started).await)?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG);
        Ok(Response::new(batch_stream(b.build())?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for (name, _) in self.schemas() {
            b.append(CATALOG, name);
        }
        Ok(Response::new(batch_stream(b.build())?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for (schema_name, schema) in self.schemas() {
            let mut names = schema.table_names();
            names.sort();
            for t in names {
                let provider =
                    schema.table(&t).await.map_err(|e| Status::internal(format!("table {schema_name}.{t}: {e}")))?;
                let Some(p) = provider else { continue };
                let s = wire_schema(&p.schema());
                b.append(CATALOG, &schema_name, &t, table_type(&schema_name, p.as_ref()), &s)
                    .map_err(|e| Status::internal(format!("listing table {t}: {e}")))?;
            }
        }
        Ok(Response::new(batch_stream(b.build())?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("TABLE");
        b.append("VIEW");
        Ok(Response::new(batch_stream(b.build())?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder(&self.sql_info).schema(), &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(batch_stream(query.into_builder(&self.sql_info).build())?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        command_info(&query.into_builder(&self.xdbc_info).schema(), &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(batch_stream(query.into_builder(&self.xdbc_info).build())?))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::catalog::StatementLimits;
    use crate::tables::tests::{fleet, write};
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use engine::bucket::Bucket;

    async fn count_of(stream: DoGetStream) -> i64 {
        let batches: Vec<RecordBatch> =
            FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from))
                .try_collect()
                .await
                .unwrap();
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    /// ADBC's prepare, GetFlightInfo and DoGet plan the SQL once; a refresh that changes the
    /// tables makes the next use plan again (and see the new block); close drops the plan.
    #[tokio::test]
    async fn prepared_statements_keep_their_plan() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        write(&bucket, ulid::Ulid::from_parts(1, 1), &fleet(100)).await;
        let catalog = SqlCatalog::new(bucket.clone(), vec![], StatementLimits::default()).unwrap();
        catalog.refresh().await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let service = StrataFlightSql::new(catalog.clone(), FlightSqlMetrics::register(&mut registry)).unwrap();

        let sql = "SELECT count(*) FROM up WHERE job = ?";
        let before = catalog.planned();
        let req = ActionCreatePreparedStatementRequest { query: sql.into(), transaction_id: None };
        let created = service.do_action_create_prepared_statement(req, Request::new(Action::default())).await.unwrap();
        let handle = created.prepared_statement_handle;
        let cmd = CommandPreparedStatementQuery { prepared_statement_handle: handle.clone() };
        // Bind `job = 'node'` (what DoPut of one parameter row stores).
        service.prepared.lock().unwrap().get_mut(&String::from_utf8_lossy(&handle).to_string()).unwrap().params =
            Some(vec![ScalarValue::Utf8(Some("node".into()))]);
        for _ in 0..2 {
            service
                .get_flight_info_prepared_statement(cmd.clone(), Request::new(FlightDescriptor::default()))
                .await
                .unwrap();
            let got = service.do_get_prepared_statement(cmd.clone(), Request::new(Ticket::default())).await.unwrap();
            assert_eq!(count_of(got.into_inner()).await, 10 * 100);
        }
        assert_eq!(catalog.planned() - before, 1, "one plan for prepare + 2 x (GetFlightInfo, DoGet)");

        // A new block: the kept plan is of older tables, so the statement is planned again.
        let more: Vec<_> =
            fleet(100).into_iter().map(|(l, t, v)| (l, t.iter().map(|t| t + 10_000_000).collect(), v)).collect();
        write(&bucket, ulid::Ulid::from_parts(2, 2), &more).await;
        catalog.refresh().await.unwrap();
        let got = service.do_get_prepared_statement(cmd.clone(), Request::new(Ticket::default())).await.unwrap();
        assert_eq!(count_of(got.into_inner()).await, 2 * 10 * 100);
        assert_eq!(catalog.planned() - before, 2);

        let close = ActionClosePreparedStatementRequest { prepared_statement_handle: handle };
        service.do_action_close_prepared_statement(close, Request::new(Action::default())).await.unwrap();
        assert!(service.prepared.lock().unwrap().is_empty());
    }
}

#[cfg(test)]
mod head_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::catalog::StatementLimits;
    use crate::head::{HeadPart, RecentHeads};
    use crate::tables::tests::{fleet, write};
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;
    use engine::bucket::Bucket;
    use engine::{Labels, MemSource};

    /// One head; counts how often its series are asked for.
    #[derive(Debug)]
    struct Counted {
        head: Arc<MemSource>,
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl RecentHeads for Counted {
        async fn heads(&self) -> Vec<HeadPart> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            vec![HeadPart { source: self.head.clone(), block_labels: Default::default() }]
        }
    }

    /// A block of `fleet(10)` and a head of `n` samples of `fresh{pod="p"}` (value 1 each).
    async fn serve(n: i64, limits: StatementLimits) -> (tempfile::TempDir, StrataFlightSql, Arc<Counted>) {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        write(&bucket, ulid::Ulid::from_parts(1, 1), &fleet(10)).await;
        let head = Arc::new(MemSource::new());
        let ts: Vec<i64> = (0..n).map(|k| 1_000_000 + k * 1000).collect();
        head.add(Labels::from_pairs([("__name__", "fresh"), ("pod", "p")]), &ts, &vec![1.0; n as usize]);
        let heads = Arc::new(Counted { head, asked: AtomicU64::new(0) });
        let catalog = SqlCatalog::new(bucket, vec![], limits).unwrap().with_heads(heads.clone());
        catalog.refresh().await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let service = StrataFlightSql::new(catalog, FlightSqlMetrics::register(&mut registry)).unwrap();
        (dir, service, heads)
    }

    async fn collect(stream: DoGetStream) -> std::result::Result<Vec<RecordBatch>, FlightError> {
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from)).try_collect().await
    }

    /// GetFlightInfo announces the schema without reading the heads; DoGet reads them once.
    #[tokio::test]
    async fn heads_are_read_once_per_execution() {
        let (_dir, service, heads) = serve(100, StatementLimits::default()).await;
        let sql = "SELECT pod, sum(value) AS s FROM fresh GROUP BY pod";
        let before = heads.asked.load(Ordering::SeqCst);
        let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
        let info = service
            .get_flight_info_statement(cmd, Request::new(FlightDescriptor::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(heads.asked.load(Ordering::SeqCst), before, "GetFlightInfo read the heads");
        let announced = info.try_decode_schema().unwrap();
        let ticket = TicketStatementQuery { statement_handle: sql.as_bytes().to_vec().into() };
        let got = service.do_get_statement(ticket, Request::new(Ticket::default())).await.unwrap();
        let batches = collect(got.into_inner()).await.unwrap();
        assert_eq!(heads.asked.load(Ordering::SeqCst), before + 1, "DoGet read the heads once");
        assert_eq!(batches[0].schema().as_ref(), &announced);
        assert_eq!(batches[0].column(1).as_primitive::<Float64Type>().value(0), 100.0);
    }

    /// A statement over a head larger than --sql.memory-limit ends with resources exhausted; the
    /// same statement fits a larger limit, and a statement over the block alone fits the small one.
    #[tokio::test]
    async fn a_huge_head_ends_the_statement_not_the_server() {
        let limits = StatementLimits { memory_limit: Some(1 << 20), timeout: None };
        let (_dir, service, _) = serve(200_000, limits).await;
        let run = |sql: &str| {
            let ticket = TicketStatementQuery { statement_handle: sql.as_bytes().to_vec().into() };
            let service = service.clone();
            async move {
                match service.do_get_statement(ticket, Request::new(Ticket::default())).await {
                    Ok(s) => collect(s.into_inner()).await.map_err(|e| match e {
                        FlightError::Tonic(s) => *s,
                        other => Status::internal(other.to_string()),
                    }),
                    Err(s) => Err(s),
                }
            }
        };
        let err = run("SELECT sum(value) FROM fresh").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("--sql.memory-limit"), "{err}");
        let got = run("SELECT sum(value) FROM node_load1").await.unwrap();
        assert_eq!(got[0].num_rows(), 1);

        let limits = StatementLimits { memory_limit: Some(256 << 20), timeout: None };
        let (_dir2, service, _) = serve(200_000, limits).await;
        let ticket = TicketStatementQuery { statement_handle: b"SELECT sum(value) FROM fresh".to_vec().into() };
        let got = service.do_get_statement(ticket, Request::new(Ticket::default())).await.unwrap();
        let got = collect(got.into_inner()).await.unwrap();
        assert_eq!(got[0].column(0).as_primitive::<Float64Type>().value(0), 200_000.0);
    }
}
