//! `berth validate PATH...`: check manifests the way the agent reads them and
//! print every problem as `path:line:col: severity: message`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use manifests::{Diagnostic, ManifestFile, ParsedFile, Severity, classify_path};
use serde::Serialize;

use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to check; directories are searched the way the
    /// agent reads its manifest directory. Default: the --manifests directory.
    pub paths: Vec<PathBuf>,
    /// `table` prints one line per problem and a summary; `json` prints one
    /// JSON document for machines.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let roots = if args.paths.is_empty() {
        vec![global.manifests.clone()]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    for root in &roots {
        collect(root, &mut files)?;
    }
    let parsed: Vec<ParsedFile> = files.iter().map(parse).collect();
    let conflicts = manifests::find_conflicts(&parsed);
    let report = Report::new(&parsed, conflicts);
    let text = match args.output {
        OutputFormat::Table => report.text(),
        OutputFormat::Json => {
            serde_json::to_string_pretty(&report).context("encoding the report as JSON")? + "\n"
        }
    };
    // A closed pipe (`berth validate | head`) is not an error worth a panic.
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(err).context("writing the report");
    }
    Ok(if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A file to check and what it is.
struct Found {
    path: PathBuf,
    kind: ManifestFile,
}

/// Adds `root` (a file, or a directory searched recursively) to `files`.
fn collect(root: &Path, files: &mut Vec<Found>) -> anyhow::Result<()> {
    let metadata =
        std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if metadata.is_dir() {
        let mut visited = Vec::new();
        walk(root, root, 0, &mut visited, files)
            .with_context(|| format!("cannot read directory {}", root.display()))
    } else {
        // A file named explicitly is checked whatever its name; hosts.toml is
        // read for the host its directory names.
        let kind = explicit_file_kind(root);
        files.push(Found {
            path: root.to_owned(),
            kind,
        });
        Ok(())
    }
}

fn explicit_file_kind(path: &Path) -> ManifestFile {
    let tail: PathBuf = path
        .components()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match classify_path(&tail) {
        Some(kind) => kind,
        None if path.file_name().is_some_and(|n| n == "hosts.toml") => ManifestFile::HostsToml {
            host: path
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        },
        None if path.extension().is_some_and(|e| e == "json") => ManifestFile::Json,
        None => ManifestFile::Yaml,
    }
}

/// Directories nest at most this deep (a symlink loop stops here too).
const MAX_DEPTH: usize = 32;

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    visited: &mut Vec<PathBuf>,
    files: &mut Vec<Found>,
) -> anyhow::Result<()> {
    // Symlinked directories are followed (git-sync and ConfigMap volumes
    // are built from them), but each real directory is read once.
    let real = std::fs::canonicalize(dir)?;
    if depth > MAX_DEPTH || visited.contains(&real) {
        return Ok(());
    }
    visited.push(real);
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path);
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follow symlinks: `b.yaml -> ..data/b.yaml` is how ConfigMap
        // volumes present files. A dangling link is skipped.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            walk(root, &path, depth + 1, visited, files)?;
        } else if let Some(kind) = classify_path(relative) {
            files.push(Found { path, kind });
        }
    }
    Ok(())
}

/// Reads at most the size limit, so a huge file costs no memory.
fn parse(found: &Found) -> ParsedFile {
    let path = &found.path;
    let unreadable = |err: std::io::Error| ParsedFile {
        path: path.clone(),
        documents: Vec::new(),
        diagnostics: vec![Diagnostic {
            file: path.clone(),
            line: 1,
            column: 1,
            severity: Severity::Error,
            field: None,
            message: format!("cannot read the file: {err}"),
        }],
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) => return unreadable(err),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > manifests::MAX_FILE_BYTES {
        return ParsedFile {
            path: path.clone(),
            documents: Vec::new(),
            diagnostics: vec![manifests::file_too_large(path, size)],
        };
    }
    let mut bytes = Vec::new();
    // One byte over the limit is enough for parse_file to refuse a file
    // that grew after the size check.
    if let Err(err) = file
        .take(manifests::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
    {
        return unreadable(err);
    }
    match &found.kind {
        ManifestFile::HostsToml { host } => manifests::parse_hosts_toml(path, host, &bytes),
        ManifestFile::Yaml | ManifestFile::Json => manifests::parse_file(path, &bytes),
    }
}

/// What `berth validate -o json` prints.
#[derive(Debug, Serialize)]
struct Report {
    files: Vec<FileReport>,
    /// Every problem, conflicts included, in file order.
    diagnostics: Vec<Diagnostic>,
    errors: usize,
    warnings: usize,
}

#[derive(Debug, Serialize)]
struct FileReport {
    path: PathBuf,
    /// `Kind/namespace/name` of each valid object.
    objects: Vec<String>,
    errors: usize,
    warnings: usize,
}

impl Report {
    fn new(parsed: &[ParsedFile], conflicts: Vec<Diagnostic>) -> Self {
        let mut diagnostics = Vec::new();
        let mut files = Vec::new();
        for file in parsed {
            let mut mine: Vec<Diagnostic> = file.all_diagnostics().cloned().collect();
            mine.extend(conflicts.iter().filter(|c| c.file == file.path).cloned());
            mine.sort_by_key(|d| (d.line, d.column));
            files.push(FileReport {
                path: file.path.clone(),
                objects: file.objects().map(|o| o.key().to_string()).collect(),
                errors: mine.iter().filter(|d| d.is_error()).count(),
                warnings: mine.iter().filter(|d| !d.is_error()).count(),
            });
            diagnostics.extend(mine);
        }
        Self {
            errors: files.iter().map(|f| f.errors).sum(),
            warnings: files.iter().map(|f| f.warnings).sum(),
            files,
            diagnostics,
        }
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for diagnostic in &self.diagnostics {
            text.push_str(&format!("{diagnostic}\n"));
        }
        let objects: usize = self.files.iter().map(|f| f.objects.len()).sum();
        text.push_str(&format!(
            "{} file{}, {objects} valid object{}: {} error{}, {} warning{}\n",
            self.files.len(),
            plural(self.files.len()),
            plural(objects),
            self.errors,
            plural(self.errors),
            self.warnings,
            plural(self.warnings),
        ));
        text
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
