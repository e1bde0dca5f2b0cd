//! Image references: whatever parses prints as a reference that parses
//! back to the same thing, and prints the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifests::ImageReference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = ImageReference::parse(text) else {
        return;
    };
    let printed = reference.to_string();
    let again = ImageReference::parse(&printed).unwrap_or_else(|err| {
        panic!("{text:?} printed as {printed:?}, which does not parse: {err}")
    });
    assert_eq!(again, reference, "{text:?} -> {printed:?}");
    assert_eq!(again.to_string(), printed);
    let familiar = reference.familiar();
    let from_familiar = ImageReference::parse(&familiar)
        .unwrap_or_else(|err| panic!("{text:?}: familiar {familiar:?} does not parse: {err}"));
    assert_eq!(
        from_familiar, reference,
        "{text:?} -> familiar {familiar:?}"
    );
});
