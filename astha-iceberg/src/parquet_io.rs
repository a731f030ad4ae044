//! Parquet data files: JSON rows in, Iceberg-ready files and their statistics out.
//!
//! Owns the data file layout readers depend on: every Arrow field carries its Iceberg field id
//! (`PARQUET:field_id`), without which pyiceberg refuses the file and DuckDB silently reads
//! NULLs. [`write_parquet`] validates every value before anything touches the disk, writes to a
//! hidden temporary name, fsyncs and renames, so a failed or crashed write never leaves a
//! partial file under the final name. It also returns the per-column statistics (value and null
//! counts, truncated bounds) that the Iceberg manifest needs. [`read_parquet_rows`] reads rows
//! back in the canonical JSON shapes of [`super::value`], matching columns by field id.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use super::data_file::{merge_stats, ColumnStats, DataFileInfo};
use super::error::{IcebergError, Result};
use super::fsutil;
use super::parquet_read::column_to_json;
use super::schema::{
    arrow_schema, validate_columns, ColumnSpec, IcebergType, PARQUET_FIELD_ID_KEY,
};
use super::value::{lower_bound_bytes, upper_bound_bytes, Datum};

/// Writes `rows` (each one value per column, in `columns` order) as a Parquet file at `path`.
///
/// Fails without creating `path` when a value does not fit its column (the error names the
/// 0-based row and the column), when a required column gets a null, or when `path` exists.
pub fn write_parquet(
    path: &Path,
    columns: &[ColumnSpec],
    rows: &[Vec<Value>],
) -> Result<DataFileInfo> {
    validate_columns(columns)?;
    let parsed = parse_rows(columns, rows)?;
    let path = new_output(path)?;

    let mut column_stats = BTreeMap::new();
    let mut arrays = Vec::with_capacity(columns.len());
    for (col, values) in columns.iter().zip(&parsed) {
        arrays.push(build_array(col.ty, values));
        column_stats.insert(col.field_id, stats_of(col.ty, values));
    }
    let batch = RecordBatch::try_new(arrow_schema(columns), arrays)?;

    let tmp = fsutil::temp_sibling(&path);
    let written = write_file(&tmp, &batch).and_then(|meta| {
        fsutil::publish(&tmp, &path)?;
        Ok(meta)
    });
    let meta = match written {
        Ok(meta) => meta,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    add_column_sizes(&meta, columns, &mut column_stats);
    let file_size_in_bytes = fs::metadata(&path)
        .map_err(|e| IcebergError::io(&path, e))?
        .len();
    Ok(DataFileInfo {
        path,
        file_size_in_bytes,
        record_count: rows.len() as u64,
        column_stats,
        partition: Vec::new(),
    })
}

/// Reads all rows of a Parquet file as JSON, one value per entry of `columns`.
///
/// Columns are matched by Iceberg field id, or by name when the file has no ids. A column the
/// file lacks reads as null if it is optional and is an error if it is required.
pub fn read_parquet_rows(path: &Path, columns: &[ColumnSpec]) -> Result<Vec<Vec<Value>>> {
    let parquet_err = |source| IcebergError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| IcebergError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let positions = field_positions(path, builder.schema(), columns)?;

    let mut rows = Vec::new();
    for batch in builder.build().map_err(parquet_err)? {
        let batch = batch?;
        let mut cols: Vec<Vec<Value>> = Vec::with_capacity(columns.len());
        for (col, pos) in columns.iter().zip(&positions) {
            cols.push(match pos {
                Some(p) => column_to_json(batch.column(*p).as_ref(), col)
                    .map_err(|reason| IcebergError::corrupt(path, reason))?,
                None => vec![Value::Null; batch.num_rows()],
            });
        }
        for r in 0..batch.num_rows() {
            rows.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(rows)
}

/// Concatenates the rows of `inputs` (data files of one table) into one new Parquet file at
/// `output`, for compaction.
///
/// Streams record batches: memory stays at about one batch whatever the sizes. Columns are
/// matched by field id, as in [`read_parquet_rows`]. The new file's statistics are merged
/// from the inputs' (counts added up, the smallest lower and the largest upper bound; a bound
/// unknown in any input that holds values is left unknown), with column sizes from the new
/// file. Publishes like [`write_parquet`] (temporary name, fsync, rename); fails without
/// creating `output` if an input cannot be read or holds another number of rows than its
/// `record_count` says.
pub fn merge_parquet(
    output: &Path,
    columns: &[ColumnSpec],
    inputs: &[DataFileInfo],
) -> Result<DataFileInfo> {
    validate_columns(columns)?;
    let output = new_output(output)?;
    let nothing = BTreeSet::new();
    let sources: Vec<Source> = inputs
        .iter()
        .map(|file| Source {
            file,
            skip: &nothing,
        })
        .collect();
    let tmp = fsutil::temp_sibling(&output);
    let written =
        copy_batches(&tmp, columns, &sources, &mut |_| Ok(())).and_then(|(meta, rows)| {
            fsutil::publish(&tmp, &output)?;
            Ok((meta, rows))
        });
    let (meta, record_count) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let mut column_stats = merge_stats(columns, inputs);
    add_column_sizes(&meta, columns, &mut column_stats);
    let file_size_in_bytes = fs::metadata(&output)
        .map_err(|e| IcebergError::io(&output, e))?
        .len();
    let partition = common_partition(inputs);
    Ok(DataFileInfo {
        path: output,
        file_size_in_bytes,
        record_count,
        column_stats,
        partition,
    })
}

/// Where each of `columns` is among the fields of the Parquet file at `path`, whose
/// Arrow schema is `schema`: by Iceberg field id, or by name when the file has no ids.
/// A column the file lacks is `None` if optional and an error if required.
fn field_positions(
    path: &Path,
    schema: &arrow_schema::Schema,
    columns: &[ColumnSpec],
) -> Result<Vec<Option<usize>>> {
    let fields = schema.fields();
    let any_ids = fields
        .iter()
        .any(|f| f.metadata().contains_key(PARQUET_FIELD_ID_KEY));
    columns
        .iter()
        .map(|c| {
            let pos = if any_ids {
                let id = c.field_id.to_string();
                fields.iter().position(|f| {
                    f.metadata().get(PARQUET_FIELD_ID_KEY).map(String::as_str) == Some(id.as_str())
                })
            } else {
                fields.iter().position(|f| f.name() == &c.name)
            };
            match pos {
                None if c.required => Err(IcebergError::corrupt(
                    path,
                    format!(
                        "required column {:?} (field id {}) is missing",
                        c.name, c.field_id
                    ),
                )),
                other => Ok(other),
            }
        })
        .collect()
}

/// `path` made absolute, its directory created; refused if a file is there already.
fn new_output(path: &Path) -> Result<std::path::PathBuf> {
    let path = fsutil::absolute(path)?;
    if path.exists() {
        return Err(IcebergError::InvalidArgument(format!(
            "data file {} already exists; data files are never overwritten",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        fsutil::create_dir_all(dir)?;
    }
    Ok(path)
}

/// The partition of a file made from `inputs`: theirs when they share one, else none (a
/// caller merging across partitions gets an unpartitioned file, which a partitioned table
/// refuses).
fn common_partition<'a>(inputs: impl IntoIterator<Item = &'a DataFileInfo>) -> Vec<Value> {
    let mut inputs = inputs.into_iter();
    let Some(first) = inputs.next() else {
        return Vec::new();
    };
    if inputs.all(|f| f.partition == first.partition) {
        first.partition.clone()
    } else {
        Vec::new()
    }
}

/// One input of [`copy_batches`]: a data file and the positions (0-based, in file order) of
/// its rows to leave out.
pub(crate) struct Source<'a> {
    pub file: &'a DataFileInfo,
    pub skip: &'a BTreeSet<u64>,
}

/// Writes the rows of `sources` (less each one's skipped positions) to a new Parquet file at
/// `tmp`, batch by batch, handing each written batch to `kept`; fsyncs it. Returns the
/// footer and the number of rows written. Fails if an input holds another number of rows
/// than its `record_count` says.
fn copy_batches(
    tmp: &Path,
    columns: &[ColumnSpec],
    sources: &[Source],
    kept: &mut dyn FnMut(&RecordBatch) -> Result<()>,
) -> Result<(ParquetMetaData, u64)> {
    let schema = arrow_schema(columns);
    let out_err = |source| IcebergError::Parquet {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(|e| IcebergError::io(tmp, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let handle = file.try_clone().map_err(|e| IcebergError::io(tmp, e))?;
    let mut writer = ArrowWriter::try_new(handle, schema.clone(), Some(props)).map_err(out_err)?;
    let mut total = 0u64;
    for Source { file: input, skip } in sources {
        let path = input.path.as_path();
        let in_err = |source| IcebergError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(|e| IcebergError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(in_err)?;
        let positions = field_positions(path, builder.schema(), columns)?;
        let mut rows = 0u64;
        for batch in builder.build().map_err(in_err)? {
            let batch = batch?;
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .zip(&positions)
                .map(|(c, pos)| match pos {
                    Some(p) => batch.column(*p).clone(),
                    None => arrow_array::new_null_array(&c.ty.arrow_type(), batch.num_rows()),
                })
                .collect();
            let batch = RecordBatch::try_new(schema.clone(), arrays)?;
            let first = rows;
            rows += batch.num_rows() as u64;
            let batch = without_positions(batch, first, skip)?;
            if batch.num_rows() == 0 {
                continue;
            }
            total += batch.num_rows() as u64;
            writer.write(&batch).map_err(out_err)?;
            kept(&batch)?;
        }
        if rows != input.record_count {
            return Err(IcebergError::corrupt(
                path,
                format!("holds {rows} rows but {} were recorded", input.record_count),
            ));
        }
    }
    let meta = writer.close().map_err(out_err)?;
    file.sync_all().map_err(|e| IcebergError::io(tmp, e))?;
    Ok((meta, total))
}

/// `batch` (the rows at file positions `first..`) without the rows at the positions in
/// `skip`.
fn without_positions(batch: RecordBatch, first: u64, skip: &BTreeSet<u64>) -> Result<RecordBatch> {
    let end = first + batch.num_rows() as u64;
    let mut gone = skip.range(first..end).peekable();
    if gone.peek().is_none() {
        return Ok(batch);
    }
    let mut keep = vec![true; batch.num_rows()];
    for pos in gone {
        keep[(pos - first) as usize] = false;
    }
    Ok(arrow_select::filter::filter_record_batch(
        &batch,
        &BooleanArray::from(keep),
    )?)
}

/// Writes the rows of `sources`, less each one's skipped positions, as one new Parquet file
/// at `output` (for folding deletes into data files): streams record batches, so memory
/// stays at about one batch whatever the sizes. Statistics are recomputed from the rows
/// written (counts and bounds are exact for what survives). Publishes like
/// [`write_parquet`]; `None`, and nothing left on disk, when no row survives.
pub(crate) fn rewrite_parquet(
    output: &Path,
    columns: &[ColumnSpec],
    sources: &[Source],
) -> Result<Option<DataFileInfo>> {
    validate_columns(columns)?;
    let output = new_output(output)?;
    let mut so_far: Option<DataFileInfo> = None;
    let mut kept = |batch: &RecordBatch| -> Result<()> {
        let mut column_stats = BTreeMap::new();
        for (i, col) in columns.iter().enumerate() {
            let values: Vec<Option<Datum>> = column_to_json(batch.column(i).as_ref(), col)
                .map_err(|reason| IcebergError::corrupt(&output, reason))?
                .iter()
                .map(|v| {
                    (!v.is_null())
                        .then(|| Datum::from_json(col.ty, v))
                        .transpose()
                })
                .collect::<std::result::Result<_, String>>()
                .map_err(|reason| IcebergError::corrupt(&output, reason))?;
            column_stats.insert(col.field_id, stats_of(col.ty, &values));
        }
        let this = DataFileInfo {
            path: output.clone(),
            file_size_in_bytes: 0,
            record_count: batch.num_rows() as u64,
            column_stats,
            partition: Vec::new(),
        };
        so_far = Some(match so_far.take() {
            None => this,
            Some(before) => DataFileInfo {
                column_stats: merge_stats(columns, &[before.clone(), this]),
                record_count: before.record_count + batch.num_rows() as u64,
                ..before
            },
        });
        Ok(())
    };
    let tmp = fsutil::temp_sibling(&output);
    let written = copy_batches(&tmp, columns, sources, &mut kept);
    let (meta, record_count) = match written {
        Ok((_, 0)) => {
            let _ = fs::remove_file(&tmp);
            return Ok(None);
        }
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fsutil::publish(&tmp, &output) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let mut info = so_far.expect("rows were written, so a batch was kept");
    debug_assert_eq!(info.record_count, record_count);
    add_column_sizes(&meta, columns, &mut info.column_stats);
    info.file_size_in_bytes = fs::metadata(&output)
        .map_err(|e| IcebergError::io(&output, e))?
        .len();
    info.partition = common_partition(sources.iter().map(|s| s.file));
    Ok(Some(info))
}

/// Column-major typed values; `None` is null. Checks every row before any file is created.
fn parse_rows(columns: &[ColumnSpec], rows: &[Vec<Value>]) -> Result<Vec<Vec<Option<Datum>>>> {
    let mut parsed: Vec<Vec<Option<Datum>>> = columns
        .iter()
        .map(|_| Vec::with_capacity(rows.len()))
        .collect();
    for (r, row) in rows.iter().enumerate() {
        if row.len() != columns.len() {
            return Err(IcebergError::InvalidArgument(format!(
                "row {r} has {} values but there are {} columns",
                row.len(),
                columns.len()
            )));
        }
        for ((col, v), out) in columns.iter().zip(row).zip(parsed.iter_mut()) {
            let bad = |reason: String| IcebergError::BadValue {
                row: r,
                column: col.name.clone(),
                reason,
            };
            if v.is_null() {
                if col.required {
                    return Err(bad("null in a required column".into()));
                }
                out.push(None);
            } else {
                out.push(Some(Datum::from_json(col.ty, v).map_err(bad)?));
            }
        }
    }
    Ok(parsed)
}

fn build_array(ty: IcebergType, values: &[Option<Datum>]) -> ArrayRef {
    // Each arm builds from the variant `parse_rows` produced for `ty`; other variants cannot
    // occur and would be appended as null rather than panicking.
    macro_rules! build {
        ($builder:expr, $variant:ident, $conv:expr) => {{
            let mut b = $builder;
            for v in values {
                match v {
                    Some(Datum::$variant(x)) => b.append_value($conv(x)),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    let n = values.len();
    match ty {
        IcebergType::Boolean => build!(BooleanBuilder::with_capacity(n), Boolean, |x: &bool| *x),
        IcebergType::Int => build!(Int32Builder::with_capacity(n), Int, |x: &i32| *x),
        IcebergType::Long => build!(Int64Builder::with_capacity(n), Long, |x: &i64| *x),
        IcebergType::Float => build!(Float32Builder::with_capacity(n), Float, |x: &f32| *x),
        IcebergType::Double => build!(Float64Builder::with_capacity(n), Double, |x: &f64| *x),
        IcebergType::String => build!(StringBuilder::new(), String, |x: &String| x.clone()),
        IcebergType::Binary => build!(BinaryBuilder::new(), Binary, |x: &Vec<u8>| x.clone()),
        IcebergType::Date => build!(Date32Builder::with_capacity(n), Date, |x: &i32| *x),
        IcebergType::Timestamp => {
            build!(
                TimestampMicrosecondBuilder::with_capacity(n),
                Timestamp,
                |x: &i64| *x
            )
        }
    }
}

fn stats_of(ty: IcebergType, values: &[Option<Datum>]) -> ColumnStats {
    let mut min: Option<&Datum> = None;
    let mut max: Option<&Datum> = None;
    let mut nulls = 0u64;
    for v in values {
        let Some(d) = v else {
            nulls += 1;
            continue;
        };
        if min.is_none_or(|m| d.compare(m) == Some(std::cmp::Ordering::Less)) {
            min = Some(d);
        }
        if max.is_none_or(|m| d.compare(m) == Some(std::cmp::Ordering::Greater)) {
            max = Some(d);
        }
    }
    ColumnStats {
        value_count: values.len() as u64,
        null_count: nulls,
        // JSON cannot carry NaN, so a float column written from JSON never holds one.
        nan_count: matches!(ty, IcebergType::Float | IcebergType::Double).then_some(0),
        column_size: None,
        lower_bound: min.map(lower_bound_bytes),
        upper_bound: max.and_then(upper_bound_bytes),
    }
}

fn write_file(tmp: &Path, batch: &RecordBatch) -> Result<ParquetMetaData> {
    let parquet_err = |source| IcebergError::Parquet {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(|e| IcebergError::io(tmp, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    // The writer gets a clone of the handle so the original can be fsynced after the footer.
    let handle = file.try_clone().map_err(|e| IcebergError::io(tmp, e))?;
    let mut writer =
        ArrowWriter::try_new(handle, batch.schema(), Some(props)).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    let meta = writer.close().map_err(parquet_err)?;
    file.sync_all().map_err(|e| IcebergError::io(tmp, e))?;
    Ok(meta)
}

/// Compressed bytes per Iceberg field id, summed over the row groups, read from the footer of
/// the Parquet file at `path` (columns without a field id are skipped). For files whose
/// writer did not report `column_sizes` (a registry row carries none).
pub(crate) fn footer_column_sizes(path: &Path) -> Result<BTreeMap<i32, u64>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(path).map_err(|e| IcebergError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|source| IcebergError::Parquet {
        path: path.to_path_buf(),
        source,
    })?;
    let mut sizes = BTreeMap::new();
    for rg in reader.metadata().row_groups() {
        for c in rg.columns() {
            let info = c.column_descr().self_type().get_basic_info();
            if info.has_id() {
                *sizes.entry(info.id()).or_insert(0u64) += c.compressed_size().max(0) as u64;
            }
        }
    }
    Ok(sizes)
}

/// Flat schemas have one Parquet leaf per column, in column order.
fn add_column_sizes(
    meta: &ParquetMetaData,
    columns: &[ColumnSpec],
    stats: &mut BTreeMap<i32, ColumnStats>,
) {
    for (i, col) in columns.iter().enumerate() {
        let size: i64 = meta
            .row_groups()
            .iter()
            .filter_map(|rg| rg.columns().get(i))
            .map(|c| c.compressed_size())
            .sum();
        if let Some(s) = stats.get_mut(&col.field_id) {
            s.column_size = u64::try_from(size).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cols() -> Vec<ColumnSpec> {
        vec![
            ColumnSpec::new(1, "id", IcebergType::Long, true),
            ColumnSpec::new(2, "name", IcebergType::String, false),
            ColumnSpec::new(3, "score", IcebergType::Double, false),
            ColumnSpec::new(4, "ok", IcebergType::Boolean, false),
            ColumnSpec::new(5, "day", IcebergType::Date, false),
            ColumnSpec::new(6, "at", IcebergType::Timestamp, false),
            ColumnSpec::new(7, "raw", IcebergType::Binary, false),
            ColumnSpec::new(8, "small", IcebergType::Int, false),
            ColumnSpec::new(9, "ratio", IcebergType::Float, false),
        ]
    }

    fn rows() -> Vec<Vec<Value>> {
        vec![
            vec![
                json!(2),
                json!("b"),
                json!(1.5),
                json!(true),
                json!("2024-01-02"),
                json!("2024-01-02T03:04:05.000006"),
                json!([0, 255]),
                json!(7),
                json!(0.5),
            ],
            vec![
                json!(1),
                Value::Null,
                json!(-2.0),
                json!(false),
                Value::Null,
                json!("1999-12-31T23:59:59.999999"),
                json!("xyz"),
                Value::Null,
                json!(2.25),
            ],
        ]
    }

    #[test]
    fn writes_readable_file_with_ids_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/a.parquet");
        let info = write_parquet(&path, &cols(), &rows()).unwrap();
        assert_eq!(info.path, path);
        assert_eq!(info.record_count, 2);
        assert_eq!(info.file_size_in_bytes, fs::metadata(&path).unwrap().len());

        let id = &info.column_stats[&1];
        assert_eq!((id.value_count, id.null_count), (2, 0));
        assert_eq!(id.lower_bound.as_deref(), Some(&1i64.to_le_bytes()[..]));
        assert_eq!(id.upper_bound.as_deref(), Some(&2i64.to_le_bytes()[..]));
        assert!(id.column_size.unwrap() > 0);
        let footer = footer_column_sizes(&info.path).unwrap();
        for (field_id, s) in &info.column_stats {
            assert_eq!(
                s.column_size,
                footer.get(field_id).copied(),
                "field {field_id}"
            );
        }
        let name = &info.column_stats[&2];
        assert_eq!(
            (name.null_count, name.lower_bound.as_deref()),
            (1, Some(&b"b"[..]))
        );
        assert_eq!(info.column_stats[&3].nan_count, Some(0));
        assert_eq!(
            info.column_stats[&5].lower_bound,
            Some(19_724i32.to_le_bytes().to_vec())
        );
        let at = &info.column_stats[&6];
        assert_eq!(
            at.lower_json(IcebergType::Timestamp),
            Some(json!("1999-12-31T23:59:59.999999"))
        );
        assert_eq!(
            at.upper_json(IcebergType::Timestamp),
            Some(json!("2024-01-02T03:04:05.000006"))
        );

        let back = read_parquet_rows(&path, &cols()).unwrap();
        assert_eq!(back, rows());

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let ids: Vec<_> = reader
            .parquet_schema()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.get_basic_info().id())
            .collect();
        assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    }

    /// Three columns, rows with ids `ids`: every 7th name null, a score of half the id.
    fn numbered(ids: std::ops::Range<i64>) -> (Vec<ColumnSpec>, Vec<Vec<Value>>) {
        let cols = vec![
            ColumnSpec::new(1, "id", IcebergType::Long, true),
            ColumnSpec::new(2, "name", IcebergType::String, false),
            ColumnSpec::new(3, "score", IcebergType::Double, false),
        ];
        let rows = ids
            .map(|i| {
                let name = if i % 7 == 0 {
                    Value::Null
                } else {
                    json!(format!("name {i:05}"))
                };
                vec![json!(i), name, json!(i as f64 / 2.0)]
            })
            .collect();
        (cols, rows)
    }

    #[test]
    fn a_rewrite_streams_the_surviving_rows_with_exact_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let (cols, big) = numbered(0..3000);
        let (_, small) = numbered(5000..5010);
        let a = write_parquet(&dir.path().join("a.parquet"), &cols, &big).unwrap();
        let b = write_parquet(&dir.path().join("b.parquet"), &cols, &small).unwrap();
        // Both ends, and both sides of the reader's 1,024-row batch boundary; all of b.
        let skip_a = BTreeSet::from([0, 1023, 1024, 2999]);
        let skip_b: BTreeSet<u64> = (0..10).collect();
        let out = dir.path().join("folded.parquet");
        let sources = [
            Source {
                file: &a,
                skip: &skip_a,
            },
            Source {
                file: &b,
                skip: &skip_b,
            },
        ];
        let info = rewrite_parquet(&out, &cols, &sources).unwrap().unwrap();

        let expected: Vec<Vec<Value>> = big
            .iter()
            .enumerate()
            .filter(|(pos, _)| !skip_a.contains(&(*pos as u64)))
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(read_parquet_rows(&out, &cols).unwrap(), expected);
        assert_eq!(info.record_count, 2996);
        assert_eq!(info.file_size_in_bytes, fs::metadata(&out).unwrap().len());
        // The same statistics as a file written from the surviving rows at once.
        let direct = write_parquet(&dir.path().join("direct.parquet"), &cols, &expected).unwrap();
        for col in &cols {
            let (got, want) = (
                &info.column_stats[&col.field_id],
                &direct.column_stats[&col.field_id],
            );
            assert_eq!(
                (got.value_count, got.null_count, got.nan_count),
                (want.value_count, want.null_count, want.nan_count),
                "{}",
                col.name
            );
            assert_eq!(got.lower_bound, want.lower_bound, "{}", col.name);
            assert_eq!(got.upper_bound, want.upper_bound, "{}", col.name);
            assert!(got.column_size.unwrap() > 0);
        }
        // Nothing survives: no file, nothing left behind.
        let none = dir.path().join("none.parquet");
        let gone = [Source {
            file: &b,
            skip: &skip_b,
        }];
        assert!(rewrite_parquet(&none, &cols, &gone).unwrap().is_none());
        let names: BTreeSet<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(
                ["a.parquet", "b.parquet", "direct.parquet", "folded.parquet"].map(String::from)
            )
        );
    }

    #[test]
    fn bad_values_name_row_and_column_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        let mut bad = rows();
        bad[1][0] = Value::Null;
        let err = write_parquet(&path, &cols(), &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 1, column \"id\": null in a required column"
        );
        let mut bad = rows();
        bad[0][2] = json!("1.5");
        let err = write_parquet(&path, &cols(), &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 0, column \"score\": expected a number, got string \"1.5\""
        );
        let err = write_parquet(&path, &cols(), &[vec![json!(1)]]).unwrap_err();
        assert!(err.to_string().contains("row 0 has 1 values"), "{err}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file and no temp file"
        );
    }

    #[test]
    fn refuses_to_overwrite_and_reads_missing_optional_columns_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        write_parquet(&path, &cols()[..2], &[vec![json!(1), json!("x")]]).unwrap();
        assert!(write_parquet(&path, &cols()[..2], &[vec![json!(1), json!("x")]]).is_err());
        let wider = read_parquet_rows(&path, &cols()[..3]).unwrap();
        assert_eq!(wider, vec![vec![json!(1), json!("x"), Value::Null]]);
        let required = [ColumnSpec::new(42, "must", IcebergType::Int, true)];
        assert!(read_parquet_rows(&path, &required).is_err());
    }

    #[test]
    fn empty_file_has_counts_but_no_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let info = write_parquet(&dir.path().join("e.parquet"), &cols(), &[]).unwrap();
        assert_eq!(info.record_count, 0);
        let s = &info.column_stats[&2];
        assert_eq!(
            (s.value_count, s.lower_bound.clone(), s.upper_bound.clone()),
            (0, None, None)
        );
    }
}
