//! Shared by the HTML report tests: what makes a page self-contained.
#![allow(dead_code)]

/// Static guarantees of a self-contained page.
pub fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for banned in [
        "http://", "https://", "<script", "@import", "<link", "<img", "<iframe",
    ] {
        assert!(!lower.contains(banned), "the HTML contains {banned:?}");
    }
    assert!(!lower.contains(" src="), "the HTML loads something (src=)");
    for (i, _) in lower.match_indices("href=") {
        let target = &lower[i + 5..];
        assert!(
            target.starts_with("\"#") || target.starts_with("'#"),
            "an href leaves the page: {}",
            &html[i..(i + 60).min(html.len())]
        );
    }
    for (i, _) in lower.match_indices("url(") {
        assert!(
            lower[i + 4..].starts_with('#'),
            "a url() outside the page: {}",
            &html[i..(i + 60).min(html.len())]
        );
    }
    assert!(
        lower.contains("content-security-policy") && lower.contains("default-src 'none'"),
        "no Content-Security-Policy forbidding fetches"
    );
}
