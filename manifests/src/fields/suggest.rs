//! "Did you mean" suggestions for misspelt field names and values.

/// The candidate closest to `input`, if one is close enough to be a typo:
/// the same word in another case, or within a small edit distance
/// (transpositions count as one edit). Earlier candidates win ties, so list
/// the most likely ones first.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lowered = input.to_lowercase();
    let max_distance = match input.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == input {
            continue;
        }
        let distance = if candidate.to_lowercase() == lowered {
            0
        } else {
            strsim::damerau_levenshtein(&lowered, &candidate.to_lowercase())
        };
        if distance <= max_distance && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_field() {
        let fields = ["image", "imagePullPolicy", "name", "ports", "volumeMounts"];
        assert_eq!(
            did_you_mean("imagePulPolicy", fields),
            Some("imagePullPolicy")
        );
        assert_eq!(
            did_you_mean("imagepullpolicy", fields),
            Some("imagePullPolicy")
        );
        assert_eq!(did_you_mean("imgae", fields), Some("image"));
        assert_eq!(did_you_mean("volumeMount", fields), Some("volumeMounts"));
        assert_eq!(did_you_mean("port", fields), Some("ports"));
        assert_eq!(did_you_mean("completelyDifferent", fields), None);
        assert_eq!(did_you_mean("x", fields), None);
    }
}
