//! Kubernetes quantities (`10Gi`, `1.5G`, `500M`) as bytes.

/// Bytes of a storage quantity, rounded up; 0 for what does not parse.
pub fn bytes_of(q: &str) -> u64 {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    let m: f64 = match unit {
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        _ => 1.0,
    };
    (n * m).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::bytes_of;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(bytes_of("10Gi"), 10 << 30);
        assert_eq!(bytes_of("1.5G"), 1_500_000_000);
        assert_eq!(bytes_of("2500Mi"), 2500 << 20);
        assert_eq!(bytes_of("1024"), 1024);
        assert_eq!(bytes_of("junk"), 0);
    }
}
