//! File formats and their detection.

pub(crate) mod amazon;
pub(crate) mod movielens;
pub(crate) mod recbole;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use amazon::AmazonVersion;

use crate::dataset::{Dataset, build};
use crate::error::{DataError, Result};

/// A supported input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// RecBole atomic files: `X.inter` (or pre-split `X.test.inter`) and optional `X.item`.
    RecBole,
    /// MovieLens 100K: `u.data` + `u.item`.
    MovieLens100K,
    /// MovieLens 1M: `ratings.dat` + `movies.dat`.
    MovieLens1M,
    /// MovieLens latest(-small): `ratings.csv` + `movies.csv`.
    MovieLensCsv,
    /// Amazon reviews + metadata JSONL of the given release.
    Amazon(AmazonVersion),
}

impl FromStr for Format {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "recbole" | "atomic" => Self::RecBole,
            "ml-100k" | "movielens-100k" => Self::MovieLens100K,
            "ml-1m" | "movielens-1m" => Self::MovieLens1M,
            "ml-csv" | "movielens-csv" | "ml-latest" => Self::MovieLensCsv,
            "amazon-2018" | "amazon2018" => Self::Amazon(AmazonVersion::V2018),
            "amazon-2023" | "amazon2023" => Self::Amazon(AmazonVersion::V2023),
            other => {
                return Err(DataError::Config {
                    field: "format",
                    message: format!(
                        "unknown format `{other}` (recbole, ml-100k, ml-1m, ml-csv, amazon-2018, amazon-2023)"
                    ),
                });
            }
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RecBole => "recbole",
            Self::MovieLens100K => "ml-100k",
            Self::MovieLens1M => "ml-1m",
            Self::MovieLensCsv => "ml-csv",
            Self::Amazon(AmazonVersion::V2018) => "amazon-2018",
            Self::Amazon(AmazonVersion::V2023) => "amazon-2023",
        })
    }
}

/// The files a format reads: interactions and, optionally, item text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// The format.
    pub format: Format,
    /// Interactions (or pre-split sequences).
    pub interactions: PathBuf,
    /// Item text, when found.
    pub items: Option<PathBuf>,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Strips `.gz`, then returns the lower-case name.
fn plain_name(p: &Path) -> String {
    let n = file_name(p).to_lowercase();
    n.strip_suffix(".gz").map(str::to_string).unwrap_or(n)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn is_json(p: &Path) -> bool {
    let n = plain_name(p);
    n.ends_with(".jsonl") || n.ends_with(".json")
}

fn is_meta(p: &Path) -> bool {
    plain_name(p).starts_with("meta")
}

/// Finds the files of `path` (a file or a folder), detecting the format unless one is given.
pub fn detect(path: &Path, format: Option<Format>) -> Result<Sources> {
    let (files, named) = if path.is_dir() {
        (list_dir(path)?, None)
    } else if path.is_file() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        (list_dir(&dir)?, Some(path.to_path_buf()))
    } else {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    };
    let find = |name: &str| files.iter().find(|p| plain_name(p) == name).cloned();
    let unknown = |message: &str| DataError::UnknownFormat {
        path: path.to_path_buf(),
        message: message.to_string(),
    };

    // Pairs of (interactions, items) by well-known names.
    let movielens = [
        (Format::MovieLens100K, "u.data", "u.item"),
        (Format::MovieLens1M, "ratings.dat", "movies.dat"),
        (Format::MovieLensCsv, "ratings.csv", "movies.csv"),
    ];
    for (fmt, inter, item) in movielens {
        let hit = match &named {
            Some(p) => plain_name(p) == inter,
            None => find(inter).is_some(),
        };
        if hit && format.is_none_or(|f| f == fmt) {
            let interactions = named.clone().or_else(|| find(inter)).unwrap_or_default();
            return Ok(Sources {
                format: fmt,
                interactions,
                items: find(item),
            });
        }
    }

    // RecBole: prefer a whole `.inter` file, else the pre-split test file (it holds the whole
    // sequence of each user).
    let inter_files: Vec<&PathBuf> = files
        .iter()
        .filter(|p| plain_name(p).ends_with(".inter"))
        .collect();
    let recbole_hit = named
        .as_ref()
        .map(|p| plain_name(p).ends_with(".inter"))
        .unwrap_or(!inter_files.is_empty());
    if recbole_hit && format.is_none_or(|f| f == Format::RecBole) {
        let interactions = match &named {
            Some(p) => p.clone(),
            None => {
                let split = |p: &&&PathBuf| {
                    [".train.inter", ".valid.inter", ".test.inter"]
                        .iter()
                        .any(|s| plain_name(p).ends_with(s))
                };
                inter_files
                    .iter()
                    .find(|p| !split(p))
                    .or_else(|| {
                        inter_files
                            .iter()
                            .find(|p| plain_name(p).ends_with(".test.inter"))
                    })
                    .map(|p| (*p).clone())
                    .ok_or_else(|| {
                        unknown("only .train/.valid .inter files: pass the .test.inter file")
                    })?
            }
        };
        let name = plain_name(&interactions);
        let stem = name.split('.').next().unwrap_or_default().to_string();
        let items = find(&format!("{stem}.item"));
        return Ok(Sources {
            format: Format::RecBole,
            interactions,
            items,
        });
    }

    // Amazon: a reviews JSON(L) file and a `meta*` file.
    let reviews = named
        .clone()
        .filter(|p| is_json(p) && !is_meta(p))
        .or_else(|| files.iter().find(|p| is_json(p) && !is_meta(p)).cloned());
    if let Some(reviews) = reviews {
        let version = match format {
            Some(Format::Amazon(v)) => v,
            Some(other) => {
                return Err(unknown(&format!(
                    "{} is JSON, not {other}",
                    reviews.display()
                )));
            }
            None => amazon::sniff_version(&reviews)?,
        };
        let items = files.iter().find(|p| is_json(p) && is_meta(p)).cloned();
        return Ok(Sources {
            format: Format::Amazon(version),
            interactions: reviews,
            items,
        });
    }
    Err(unknown(
        "no u.data, ratings.dat, ratings.csv, *.inter or reviews JSONL found (use --format to say which)",
    ))
}

/// Loads a data set from a file or folder, detecting its format.
pub fn load(path: impl AsRef<Path>) -> Result<Dataset> {
    load_sources(&detect(path.as_ref(), None)?)
}

/// Loads a data set from a file or folder in the given format.
pub fn load_with(path: impl AsRef<Path>, format: Format) -> Result<Dataset> {
    load_sources(&detect(path.as_ref(), Some(format))?)
}

/// Loads the given files.
pub fn load_sources(src: &Sources) -> Result<Dataset> {
    let span =
        tracing::info_span!("load", format = %src.format, path = %src.interactions.display());
    let _guard = span.enter();
    let (log, items) = match src.format {
        Format::RecBole => (
            recbole::read_inter(&src.interactions)?,
            src.items.as_deref().map(recbole::read_item).transpose()?,
        ),
        Format::MovieLens100K => (
            movielens::read_100k_ratings(&src.interactions)?,
            src.items
                .as_deref()
                .map(movielens::read_100k_items)
                .transpose()?,
        ),
        Format::MovieLens1M => (
            movielens::read_1m_ratings(&src.interactions)?,
            src.items
                .as_deref()
                .map(movielens::read_1m_movies)
                .transpose()?,
        ),
        Format::MovieLensCsv => (
            movielens::read_csv_ratings(&src.interactions)?,
            src.items
                .as_deref()
                .map(movielens::read_csv_movies)
                .transpose()?,
        ),
        Format::Amazon(v) => (
            amazon::read_reviews(&src.interactions, v)?,
            src.items
                .as_deref()
                .map(|p| amazon::read_meta(p, v))
                .transpose()?,
        ),
    };
    let ds = build(log, items)?;
    tracing::info!(
        users = ds.n_users(),
        items = ds.n_items(),
        interactions = ds.n_interactions(),
        "loaded"
    );
    Ok(ds)
}
