//! Thanos's objstore YAML (`--objstore.config-file`): the `type`, `config` and `prefix` of a
//! bucket, parsed strictly as Thanos does (an unknown key is an error naming it).
//!
//! ```yaml
//! type: S3                  # or FILESYSTEM (case-insensitive)
//! prefix: tenant-a          # optional: every object under this path
//! config:
//!   bucket: metrics
//!   endpoint: s3.eu-west-1.amazonaws.com
//! ```
//!
//! Every key of Thanos's FILESYSTEM and S3 configs is recognised. The ones Strata implements are
//! used; the others are accepted only at the value Thanos uses by default (so Thanos's documented
//! full example works as is) and refused at any other value, with an error naming the key: a
//! setting Strata would silently not honour is never accepted.
//!
//! YAML is read with `serde-saphyr` (YAML 1.2 with Go `yaml.v2`'s leniencies for typed fields:
//! `yes`/`no`/`on`/`off` are booleans where a boolean is expected, a plain `2024` or `0123` is the
//! text `"2024"`/`"0123"` where a string is expected, a duplicated key is an error). `type` is read
//! first and the file again into the typed config of that type, so no value passes through an
//! untyped tree.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::duration::parse_prometheus_duration;

/// A parsed objstore file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObjstoreConfig {
    /// The object storage and its settings.
    pub(crate) kind: Kind,
    /// `prefix`, trimmed of slashes (empty: the bucket root).
    pub(crate) prefix: String,
}

/// The object storage of an objstore file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// `type: FILESYSTEM`.
    Filesystem(FilesystemConfig),
    /// `type: S3`.
    S3(Box<S3Config>),
}

/// `type` and `prefix`, with `config` skipped (the first of the two reads).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default, rename = "config")]
    _config: Option<IgnoredAny>,
}

/// The whole file with `config` read as `C` (the second read).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed<C> {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(default, rename = "prefix")]
    _prefix: Option<IgnoredAny>,
    #[serde(default = "Option::default")]
    config: Option<C>,
}

/// `config` of `type: FILESYSTEM` (Thanos: `directory` only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FilesystemConfig {
    /// The local directory holding the blocks.
    pub(crate) directory: String,
}

/// `config` of `type: S3`: the keys of Thanos's S3 config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct S3Config {
    pub(crate) bucket: String,
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) session_token: String,
    /// Plain HTTP to the endpoint.
    pub(crate) insecure: bool,
    /// `auto` (empty), `virtual-hosted` or `path`.
    pub(crate) bucket_lookup_type: String,
    pub(crate) http_config: HttpConfig,
    /// False (Thanos's default): AWS endpoints are reached through their dual-stack form.
    pub(crate) disable_dualstack: bool,
    /// True (Thanos's default): uploads carry an integrity checksum (SHA-256: object_store has no
    /// Content-MD5).
    pub(crate) send_content_md5: bool,
    aws_sdk_auth: bool,
    signature_version2: bool,
    put_user_metadata: BTreeMap<String, String>,
    trace: TraceConfig,
    list_objects_version: String,
    disable_multipart: bool,
    part_size: u64,
    sse_config: SseConfig,
    sts_endpoint: String,
}

/// Thanos's default part size, 64 MiB.
const DEFAULT_PART_SIZE: u64 = 64 << 20;

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            session_token: String::new(),
            insecure: false,
            bucket_lookup_type: String::new(),
            http_config: HttpConfig::default(),
            disable_dualstack: false,
            send_content_md5: true,
            aws_sdk_auth: false,
            signature_version2: false,
            put_user_metadata: BTreeMap::new(),
            trace: TraceConfig::default(),
            list_objects_version: String::new(),
            disable_multipart: false,
            part_size: DEFAULT_PART_SIZE,
            sse_config: SseConfig::default(),
            sts_endpoint: String::new(),
        }
    }
}

/// `config.trace` of S3.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TraceConfig {
    enable: bool,
}

/// `config.sse_config` of S3.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SseConfig {
    #[serde(rename = "type")]
    kind: String,
    kms_key_id: String,
    kms_encryption_context: BTreeMap<String, String>,
    encryption_key: String,
}

/// `config.http_config` of S3 (durations as Prometheus duration strings).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HttpConfig {
    /// Accept any server certificate.
    pub(crate) insecure_skip_verify: bool,
    pub(crate) tls_config: TlsConfig,
    idle_conn_timeout: Option<String>,
    response_header_timeout: Option<String>,
    tls_handshake_timeout: Option<String>,
    expect_continue_timeout: Option<String>,
    max_idle_conns: Option<u64>,
    max_idle_conns_per_host: Option<u64>,
    max_conns_per_host: u64,
    force_attempt_http2: bool,
    disable_compression: bool,
}

/// `config.http_config.tls_config` of S3.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsConfig {
    /// Accept any server certificate (same as `http_config.insecure_skip_verify`).
    pub(crate) insecure_skip_verify: bool,
    ca_file: String,
    cert_file: String,
    key_file: String,
    server_name: String,
}

impl S3Config {
    /// Accept any server certificate (either `insecure_skip_verify` key).
    pub(crate) fn skip_tls_verify(&self) -> bool {
        self.http_config.insecure_skip_verify || self.http_config.tls_config.insecure_skip_verify
    }

    /// Refuses the keys Strata does not implement when they differ from Thanos's defaults, and
    /// checks the values of those it does.
    fn check(&self) -> Result<(), String> {
        only_default("aws_sdk_auth", &self.aws_sdk_auth, &false)?;
        only_default("signature_version2", &self.signature_version2, &false)?;
        only_default("put_user_metadata", &self.put_user_metadata, &BTreeMap::new())?;
        only_default("trace.enable", &self.trace.enable, &false)?;
        if !matches!(self.list_objects_version.as_str(), "" | "v2") {
            return Err(unsupported("list_objects_version", &self.list_objects_version, "\"v2\" (or empty)"));
        }
        only_default("disable_multipart", &self.disable_multipart, &false)?;
        only_default("part_size", &self.part_size, &DEFAULT_PART_SIZE)?;
        only_default("sse_config", &self.sse_config, &SseConfig::default())?;
        only_default("sts_endpoint", &self.sts_endpoint, &String::new())?;
        if !matches!(self.bucket_lookup_type.as_str(), "" | "auto" | "virtual-hosted" | "path") {
            return Err(format!(
                "bucket_lookup_type {:?} is not one of auto, virtual-hosted, path",
                self.bucket_lookup_type
            ));
        }
        let h = &self.http_config;
        let durations = [
            ("idle_conn_timeout", &h.idle_conn_timeout, 90_000),
            ("response_header_timeout", &h.response_header_timeout, 120_000),
            ("tls_handshake_timeout", &h.tls_handshake_timeout, 10_000),
            ("expect_continue_timeout", &h.expect_continue_timeout, 1_000),
        ];
        for (key, v, default_ms) in durations {
            if let Some(v) = v {
                let ms = parse_prometheus_duration(v)
                    .ok_or_else(|| format!("http_config.{key} {v:?} is not a duration such as 1m30s"))?;
                if ms != default_ms {
                    return Err(unsupported(&format!("http_config.{key}"), v, &format!("{}s", default_ms / 1000)));
                }
            }
        }
        only_default("http_config.max_idle_conns", &h.max_idle_conns.unwrap_or(100), &100)?;
        only_default("http_config.max_idle_conns_per_host", &h.max_idle_conns_per_host.unwrap_or(100), &100)?;
        only_default("http_config.max_conns_per_host", &h.max_conns_per_host, &0)?;
        only_default("http_config.force_attempt_http2", &h.force_attempt_http2, &false)?;
        only_default("http_config.disable_compression", &h.disable_compression, &false)?;
        let t = &h.tls_config;
        for (key, v) in [("ca_file", &t.ca_file), ("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
            only_default(&format!("http_config.tls_config.{key}"), v, &String::new())?;
        }
        only_default("http_config.tls_config.server_name", &t.server_name, &String::new())?;
        Ok(())
    }
}

fn unsupported(key: &str, got: &dyn Debug, default: &str) -> String {
    format!("`{key}: {got:?}` is not supported by Strata (only Thanos's default, {default})")
}

fn only_default<T: PartialEq + Debug>(key: &str, got: &T, default: &T) -> Result<(), String> {
    if got == default { Ok(()) } else { Err(unsupported(key, got, &format!("{default:?}"))) }
}

/// Parses objstore YAML text; the error says what is wrong (the caller names the file).
pub(crate) fn parse(text: &str) -> Result<ObjstoreConfig, String> {
    let header: Header = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let kind = header.kind.to_ascii_uppercase();
    let typed = |what: &str| format!("{what} config: ");
    let kind = match kind.as_str() {
        "FILESYSTEM" => {
            let c: Typed<FilesystemConfig> =
                serde_saphyr::from_str(text).map_err(|e| typed("FILESYSTEM") + &e.to_string())?;
            let fs = c.config.unwrap_or_default();
            if fs.directory.is_empty() {
                return Err("FILESYSTEM config needs `directory`".into());
            }
            Kind::Filesystem(fs)
        }
        "S3" => {
            let c: Typed<S3Config> = serde_saphyr::from_str(text).map_err(|e| typed("S3") + &e.to_string())?;
            let s3 = c.config.unwrap_or_default();
            s3.check().map_err(|e| typed("S3") + &e)?;
            if s3.bucket.is_empty() {
                return Err("S3 config needs `bucket`".into());
            }
            Kind::S3(Box::new(s3))
        }
        _ => {
            return Err(format!("object storage type {:?} is not supported (supported: FILESYSTEM, S3)", header.kind));
        }
    };
    let prefix = header.prefix.unwrap_or_default().trim_matches('/').to_string();
    Ok(ObjstoreConfig { kind, prefix })
}

/// Reads YAML text as `T` with the same options as the objstore files (exposed for the crate's
/// tests of other YAML shapes).
#[cfg(test)]
fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s3(text: &str) -> S3Config {
        match parse(text).unwrap().kind {
            Kind::S3(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    /// Thanos's documented S3 example with every key, at Thanos's defaults where Strata does not
    /// implement the key.
    const THANOS_S3: &str = r#"type: S3
config:
  bucket: "metrics-eu1"
  endpoint: "s3.eu-west-1.amazonaws.com"
  region: "eu-west-1"
  disable_dualstack: false
  aws_sdk_auth: false
  access_key: "AKIAIOSFODNN7EXAMPLE"
  insecure: false
  signature_version2: false
  secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
  session_token: ""
  put_user_metadata: {}
  http_config:
    idle_conn_timeout: 1m30s
    response_header_timeout: 2m
    insecure_skip_verify: false
    tls_handshake_timeout: 10s
    expect_continue_timeout: 1s
    max_idle_conns: 100
    max_idle_conns_per_host: 100
    max_conns_per_host: 0
    tls_config:
      ca_file: ""
      cert_file: ""
      key_file: ""
      server_name: ""
      insecure_skip_verify: false
    disable_compression: false
  trace:
    enable: false
  list_objects_version: ""
  bucket_lookup_type: auto
  send_content_md5: true
  disable_multipart: false
  part_size: 67108864
  sse_config:
    type: ""
    kms_key_id: ""
    kms_encryption_context: {}
    encryption_key: ""
  sts_endpoint: ""
prefix: "strata/"
"#;

    #[test]
    fn thanos_s3_example_with_every_key() {
        let c = parse(THANOS_S3).unwrap();
        assert_eq!(c.prefix, "strata");
        let Kind::S3(s) = c.kind else { panic!("{c:?}") };
        assert_eq!(
            (s.bucket.as_str(), s.endpoint.as_str(), s.region.as_str()),
            ("metrics-eu1", "s3.eu-west-1.amazonaws.com", "eu-west-1")
        );
        assert_eq!(s.access_key, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(s.secret_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert_eq!((s.insecure, s.skip_tls_verify(), s.bucket_lookup_type.as_str()), (false, false, "auto"));
    }

    #[test]
    fn minimal_s3_and_go_yaml_scalars() {
        // An unquoted number is the text where a string is expected; YAML 1.1 booleans are
        // booleans where a boolean is expected (as Go's yaml.v2 reads them).
        let s = s3(
            "type: s3\nconfig:\n  bucket: 2024\n  access_key: 0123\n  secret_key: 1e3\n  insecure: yes\n  endpoint: 127.0.0.1:9000\n",
        );
        assert_eq!((s.bucket.as_str(), s.access_key.as_str(), s.secret_key.as_str()), ("2024", "0123", "1e3"));
        assert!(s.insecure);
        assert_eq!(s.endpoint, "127.0.0.1:9000");
        let s = s3(
            "type: S3\nconfig:\n  bucket: b\n  insecure: off\n  http_config:\n    tls_config:\n      insecure_skip_verify: true\n",
        );
        assert!(!s.insecure && s.skip_tls_verify());
        // Keys in any order: `config` before `type`.
        assert_eq!(s3("config:\n  bucket: late\ntype: S3\n").bucket, "late");
    }

    #[test]
    fn filesystem_config() {
        let c = parse("type: FILESYSTEM\nconfig:\n  directory: /var/strata/bucket\n").unwrap();
        assert_eq!(c.kind, Kind::Filesystem(FilesystemConfig { directory: "/var/strata/bucket".into() }));
        assert_eq!(c.prefix, "");
        let c = parse("type: filesystem\nprefix: /a/b/\nconfig: {directory: 'C:\\data'}\n").unwrap();
        assert_eq!(c.kind, Kind::Filesystem(FilesystemConfig { directory: "C:\\data".into() }));
        assert_eq!(c.prefix, "a/b");
        assert!(parse("type: FILESYSTEM\nconfig:\n").unwrap_err().contains("directory"));
        assert!(parse("type: FILESYSTEM\n").unwrap_err().contains("directory"));
    }

    #[test]
    fn refusals_name_the_key() {
        let err = |t: &str| parse(t).unwrap_err();
        let e = err("type: S3\nconfig:\n  bucket: b\n  buckets: typo\n");
        assert!(e.contains("buckets"), "{e}");
        let e = err("type: FILESYSTEM\nconfig:\n  directory: /x\n  dir: /y\n");
        assert!(e.contains("dir"), "{e}");
        let e = err("type: S3\nconfig:\n  bucket: b\nextra: 1\n");
        assert!(e.contains("extra"), "{e}");
        let e = err("type: S3\nconfig:\n  bucket: b\n  bucket: c\n");
        assert!(e.to_lowercase().contains("duplicate"), "{e}");
        let e = err("type: GCS\nconfig:\n  bucket: b\n");
        assert!(e.contains("GCS") && e.contains("FILESYSTEM, S3"), "{e}");
        for (yaml, key) in [
            ("signature_version2: true", "signature_version2"),
            ("aws_sdk_auth: true", "aws_sdk_auth"),
            ("part_size: 1024", "part_size"),
            ("sse_config:\n    type: SSE-S3", "sse_config"),
            ("put_user_metadata:\n    X-Amz-Storage-Class: STANDARD_IA", "put_user_metadata"),
            ("list_objects_version: v1", "list_objects_version"),
            ("http_config:\n    idle_conn_timeout: 5m", "http_config.idle_conn_timeout"),
            ("http_config:\n    tls_config:\n      ca_file: /ca.pem", "http_config.tls_config.ca_file"),
            ("bucket_lookup_type: virtual-host", "bucket_lookup_type"),
        ] {
            let e = err(&format!("type: S3\nconfig:\n  bucket: b\n  {yaml}\n"));
            assert!(e.contains(key), "{yaml}: {e}");
        }
        // A Thanos default in another spelling is still the default.
        s3("type: S3\nconfig:\n  bucket: b\n  list_objects_version: v2\n  http_config:\n    idle_conn_timeout: 90s\n");
        assert!(err("type: S3\nconfig:\n  bucket: b\n  insecure: maybe\n").contains("insecure"));
    }

    /// The shape of a Prometheus rule file (the ruler will read these with the same crate):
    /// groups of recording and alerting rules, multi-line expressions in literal and folded
    /// blocks, Go templates in annotations, durations, quoted and plain label values.
    #[test]
    fn prometheus_rule_file_shape() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RuleFile {
            groups: Vec<Group>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Group {
            name: String,
            #[serde(default)]
            interval: Option<String>,
            #[serde(default)]
            limit: Option<u64>,
            rules: Vec<Rule>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rule {
            #[serde(default)]
            record: Option<String>,
            #[serde(default)]
            alert: Option<String>,
            expr: String,
            #[serde(default, rename = "for")]
            for_: Option<String>,
            #[serde(default)]
            keep_firing_for: Option<String>,
            #[serde(default)]
            labels: BTreeMap<String, String>,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        let text = r#"
groups:
  - name: api.rules
    interval: 30s
    rules:
      - record: job:http_requests:rate5m
        expr: sum by (job) (rate(http_requests_total[5m]))
      - record: instance:errors:ratio
        expr: |
          sum by (instance) (rate(http_requests_total{status=~"5.."}[5m]))
            /
          sum by (instance) (rate(http_requests_total[5m]))
        labels:
          team: api
  - name: alerts
    limit: 10
    rules:
      - alert: HighErrorRate
        expr: >
          instance:errors:ratio
          > 0.05
        for: 10m
        keep_firing_for: 5m
        labels:
          severity: page
          code: 404
          enabled: yes
        annotations:
          summary: "High error rate on {{ $labels.instance }}"
          description: |-
            {{ $labels.instance }} of job {{ $labels.job }} answers {{ $value | humanizePercentage }} errors: "5xx".
            Runbook: https://example.com/runbooks#errors
      - alert: Down
        expr: up == 0
        annotations:
          summary: '{{ $labels.job }}: target {{ $labels.instance }} is down'
"#;
        let f: RuleFile = from_str(text).unwrap();
        assert_eq!(f.groups.len(), 2);
        let g = &f.groups[0];
        assert_eq!((g.name.as_str(), g.interval.as_deref(), g.limit), ("api.rules", Some("30s"), None));
        assert_eq!(g.rules[0].record.as_deref(), Some("job:http_requests:rate5m"));
        assert_eq!(g.rules[0].expr, "sum by (job) (rate(http_requests_total[5m]))");
        assert_eq!(
            g.rules[1].expr,
            "sum by (instance) (rate(http_requests_total{status=~\"5..\"}[5m]))\n  /\nsum by (instance) (rate(http_requests_total[5m]))\n"
        );
        assert_eq!(g.rules[1].labels["team"], "api");
        let a = &f.groups[1].rules[0];
        assert_eq!((a.alert.as_deref(), f.groups[1].limit), (Some("HighErrorRate"), Some(10)));
        assert_eq!(a.expr, "instance:errors:ratio > 0.05\n");
        assert_eq!((a.for_.as_deref(), a.keep_firing_for.as_deref()), (Some("10m"), Some("5m")));
        // Label values are strings, even when they look like a number or a YAML 1.1 boolean.
        assert_eq!((a.labels["severity"].as_str(), a.labels["code"].as_str()), ("page", "404"));
        assert_eq!(a.labels["enabled"], "yes");
        assert_eq!(a.annotations["summary"], "High error rate on {{ $labels.instance }}");
        assert_eq!(
            a.annotations["description"],
            "{{ $labels.instance }} of job {{ $labels.job }} answers {{ $value | humanizePercentage }} errors: \"5xx\".\nRunbook: https://example.com/runbooks#errors"
        );
        assert!(a.record.is_none());
        let d = &f.groups[1].rules[1];
        assert_eq!(d.annotations["summary"], "{{ $labels.job }}: target {{ $labels.instance }} is down");
        assert!(d.for_.is_none() && d.labels.is_empty());
        // A rule with a key Prometheus does not know is refused, naming it.
        let e = from_str::<RuleFile>(
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        fro: 5m\n",
        )
        .unwrap_err();
        assert!(e.contains("fro"), "{e}");
    }
}
