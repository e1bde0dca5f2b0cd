//! `berth images`: the stored images, as a table or JSON; `--check
//! [IMAGE...]` verifies their content instead (exit 1 when something is
//! missing or corrupt).

use std::process::ExitCode;

use anyhow::Context;

use super::{GlobalArgs, OutputFormat};
use crate::image::check::ImageCheck;
use crate::image::meta::ImageRecord;
use crate::image::service::{ImageReference, ImageService};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Show full digests.
    #[arg(long)]
    pub no_trunc: bool,
    /// Re-hash every blob and look for every snapshot of the images (all
    /// of them, or those named); exit 1 when anything is missing or corrupt.
    #[arg(long)]
    pub check: bool,
    /// With --check: the images to check.
    #[arg(requires = "check", value_name = "IMAGE")]
    pub images: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    if args.check {
        return check(global, &args);
    }
    let service = open_service(global)?;
    let images = service.list().context("listing images")?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&images)? + "\n",
        OutputFormat::Table => table(&images, args.no_trunc, crate::image::meta::now()),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn check(global: &GlobalArgs, args: &Args) -> anyhow::Result<ExitCode> {
    let references = parse_references(&args.images)?;
    let service = open_service(global)?;
    let checks = service.check(&references).context("checking images")?;
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&checks)? + "\n",
        OutputFormat::Table => check_table(&checks),
    };
    emit(&text)?;
    Ok(if checks.iter().all(ImageCheck::is_ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per image (`ok` or how many problems), each problem indented
/// below it, and a hint at the repair.
fn check_table(checks: &[ImageCheck]) -> String {
    let mut out = String::new();
    for check in checks {
        if check.is_ok() {
            out.push_str(&format!(
                "{}   {}   ok\n",
                check.name, check.manifest_digest
            ));
            continue;
        }
        let count = check.problems.len();
        let plural = if count == 1 { "" } else { "s" };
        out.push_str(&format!(
            "{}   {}   {count} problem{plural}\n",
            check.name, check.manifest_digest
        ));
        for problem in &check.problems {
            out.push_str(&format!("  {problem}\n"));
        }
    }
    if checks.iter().any(|check| !check.is_ok()) {
        out.push_str("`berth pull IMAGE` repairs a damaged image\n");
    }
    out
}

/// Image names from the command line, each error naming its argument.
pub(super) fn parse_references(names: &[String]) -> anyhow::Result<Vec<ImageReference>> {
    names
        .iter()
        .map(|name| {
            name.parse::<ImageReference>()
                .with_context(|| format!("image name {name:?}"))
        })
        .collect()
}

/// Writes to stdout; a reader that went away (`berth images | head`) is
/// not an error.
pub(super) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Opens the image store under `--root`, naming it when that fails.
pub(super) fn open_service(global: &GlobalArgs) -> anyhow::Result<ImageService> {
    open_configured_service(global, None)
}

/// [`open_service`] with the `[store]` settings (layer limits) of the
/// agent config at `config`, so commands that unpack do it as the agent
/// would.
pub(super) fn open_configured_service(
    global: &GlobalArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<ImageService> {
    let config = match config {
        Some(path) => crate::config::AgentConfig::load(path)?,
        None => crate::config::AgentConfig::default(),
    };
    ImageService::with_options(&global.paths(), config.store.service_options())
        .with_context(|| format!("opening the image store under {}", global.root.display()))
}

fn table(images: &[ImageRecord], no_trunc: bool, now: i64) -> String {
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "CREATED".to_owned(),
    ]];
    for image in images {
        let (repository, tag) = split_name(&image.name);
        let digest = image.manifest_digest.to_string();
        let digest = if no_trunc {
            digest
        } else {
            digest.chars().take("sha256:".len() + 12).collect()
        };
        rows.push([
            repository.to_owned(),
            tag.unwrap_or("<none>").to_owned(),
            digest,
            human_size(image.unpacked_size.unwrap_or(image.compressed_size)),
            image
                .created
                .as_deref()
                .and_then(parse_rfc3339)
                .map_or_else(|| "unknown".to_owned(), |created| time_ago(now - created)),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|col| rows.iter().map(|row| row[col].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `registry/repo:tag[@digest]` → (`registry/repo`, `tag`).
fn split_name(name: &str) -> (&str, Option<&str>) {
    let without_digest = name.split_once('@').map_or(name, |(before, _)| before);
    match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (without_digest, None),
    }
}

/// Decimal units, as docker prints sizes: `4.2MB`.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

fn time_ago(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (value, unit) = match seconds {
        s if s < 60 => return "just now".to_owned(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 14 => (s / 86_400, "day"),
        s if s < 86_400 * 60 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 730 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    let plural = if value == 1 { "" } else { "s" };
    format!("{value} {unit}{plural} ago")
}

/// Unix seconds of an RFC 3339 time (`2023-11-14T22:13:20.5Z`, `…+02:00`).
pub(super) fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let offset_at = time.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = time.split_at(offset_at);
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: i64 = clock_parts.next()?.split('.').next()?.parse().ok()?;
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("127.0.0.1:5000/a/b:1.0"),
            ("127.0.0.1:5000/a/b", Some("1.0"))
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a/b@sha256:ab"),
            ("127.0.0.1:5000/a/b", None)
        );
        assert_eq!(
            split_name("docker.io/library/busybox:latest@sha256:ab"),
            ("docker.io/library/busybox", Some("latest"))
        );
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_200_000), "4.2MB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(10_000), "10kB");
        assert_eq!(human_size(274_000_000), "274MB");
    }

    #[test]
    fn rfc3339_times_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.123+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(time_ago(30), "just now");
        assert_eq!(time_ago(3 * 86_400), "3 days ago");
        assert_eq!(time_ago(3600), "1 hour ago");
    }
}
