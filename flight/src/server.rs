//! Serving the Flight SQL service: the tonic routes with optional bearer-token authentication.
//!
//! ```text
//!   request ──► auth interceptor (`authorization: Bearer <token>`, if a token is set)
//!           ──► FlightServiceServer(StrataFlightSql)
//! ```

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::service::Routes;
use tonic::{Request, Status};

use crate::service::StrataFlightSql;

/// Largest message the server accepts or sends (bound parameters, result batches).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The gRPC routes of `service`. With `token`, every call must carry `authorization: Bearer
/// <token>` (gRPC metadata), otherwise it fails with `UNAUTHENTICATED`.
pub fn routes(service: StrataFlightSql, token: Option<String>) -> Routes {
    let server = FlightServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let expected = token.map(|t| format!("Bearer {}", t.trim()));
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let Some(expected) = &expected else { return Ok(req) };
        match req.metadata().get("authorization").map(|v| v.to_str()) {
            Some(Ok(got)) if constant_time_eq(got.as_bytes(), expected.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated("missing bearer token (authorization: Bearer <token>)")),
        }
    };
    Routes::new(tonic::service::interceptor::InterceptedService::new(server, check))
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
