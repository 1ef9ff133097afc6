//! The scalar function `strata_labels(<label columns>..., <overflow map>)`: one series' labels as a
//! `Map<Utf8, Utf8>` sorted by name, from the series table's label columns (NULL where a series
//! lacks the label) and its overflow map (labels beyond the column limit).
//!
//! ```text
//!   job='api' | instance=NULL | zone='eu' | labels={x: '1'}  ──►  {job: api, x: 1, zone: eu}
//! ```
//!
//! `__name__` is not passed: the tables carry it as `metric`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, MapBuilder, MapFieldNames, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Name of the function as SQL sees it.
pub(crate) const NAME: &str = "strata_labels";

#[derive(Debug, PartialEq, Eq, Hash)]
struct LabelsMap {
    /// Label name of each column argument; the last argument is the overflow map.
    names: Vec<String>,
    signature: Signature,
}

/// A new map builder with the key/value field names the function's type announces.
fn builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "entries".into(), key: "key".into(), value: "value".into() };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// The Arrow type of a labels map.
pub(crate) fn labels_type() -> DataType {
    builder().finish().data_type().clone()
}

/// The expression `strata_labels(columns..., overflow)` over label columns named `names`.
pub(crate) fn labels_expr(names: &[String], columns: Vec<Expr>, overflow: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(LabelsMap {
        names: names.to_vec(),
        signature: Signature::any(names.len() + 1, Volatility::Immutable),
    });
    let mut args = columns;
    args.push(overflow);
    udf.call(args)
}

impl ScalarUDFImpl for LabelsMap {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(labels_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some((overflow, columns)) = arrays.split_last() else {
            return exec_err!("{NAME}: no arguments");
        };
        if columns.len() != self.names.len() {
            return exec_err!("{NAME}: {} label columns for {} names", columns.len(), self.names.len());
        }
        let strings: Vec<ArrayRef> =
            columns.iter().map(|c| arrow::compute::cast(c, &DataType::Utf8)).collect::<std::result::Result<_, _>>()?;
        let strings: Vec<&StringArray> = strings.iter().map(|a| a.as_string::<i32>()).collect();
        let overflow: Option<(&MapArray, &StringArray, &StringArray)> = match overflow.data_type() {
            DataType::Map(..) => {
                let m = overflow.as_map();
                let (Some(k), Some(v)) = (m.keys().as_string_opt::<i32>(), m.values().as_string_opt::<i32>()) else {
                    return exec_err!("{NAME}: overflow map is not Map<Utf8, Utf8>");
                };
                Some((m, k, v))
            }
            DataType::Null => None,
            other => return exec_err!("{NAME}: overflow argument is {other}, not a map"),
        };
        let mut out = builder();
        let mut row: Vec<(&str, &str)> = Vec::new();
        for i in 0..n {
            row.clear();
            for (name, col) in self.names.iter().zip(&strings) {
                if col.is_valid(i) && !col.value(i).is_empty() {
                    row.push((name.as_str(), col.value(i)));
                }
            }
            if let Some((m, keys, values)) = overflow.filter(|(m, _, _)| m.is_valid(i)) {
                let offsets = m.value_offsets();
                for k in offsets[i] as usize..offsets[i + 1] as usize {
                    if values.is_valid(k) {
                        row.push((keys.value(k), values.value(k)));
                    }
                }
            }
            row.sort_unstable();
            for (k, v) in &row {
                out.keys().append_value(k);
                out.values().append_value(v);
            }
            out.append(true)?;
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::DictionaryArray;
    use arrow::datatypes::{Field, Int32Type};
    use datafusion::common::config::ConfigOptions;

    #[test]
    fn builds_sorted_maps_without_nulls() {
        let names = vec!["job".to_string(), "zone".to_string()];
        let job: DictionaryArray<Int32Type> = vec![Some("api"), None].into_iter().collect();
        let zone = StringArray::from(vec![Some("eu"), Some("us")]);
        let mut ov = builder();
        ov.keys().append_value("a");
        ov.values().append_value("1");
        ov.append(true).unwrap();
        ov.append(false).unwrap();
        let ov = ov.finish();
        let f = LabelsMap { names: names.clone(), signature: Signature::any(3, Volatility::Immutable) };
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(Arc::new(job)),
                ColumnarValue::Array(Arc::new(zone)),
                ColumnarValue::Array(Arc::new(ov)),
            ],
            arg_fields: vec![],
            number_rows: 2,
            return_field: Arc::new(Field::new("l", labels_type(), true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let ColumnarValue::Array(out) = f.invoke_with_args(args).unwrap() else { panic!("scalar") };
        let m = out.as_map();
        let row = |i: usize| {
            let e = m.value(i);
            let (k, v) = (e.column(0).as_string::<i32>(), e.column(1).as_string::<i32>());
            (0..e.len()).map(|j| format!("{}={}", k.value(j), v.value(j))).collect::<Vec<_>>()
        };
        assert_eq!(row(0), ["a=1", "job=api", "zone=eu"]);
        assert_eq!(row(1), ["zone=us"]);
        assert_eq!(out.data_type(), &labels_type());
    }
}
