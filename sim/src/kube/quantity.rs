//! Kubernetes resource quantities (`10Gi`, `500M`, `1e3`), as whole units.

/// The quantity in base units (bytes for storage), rounded up; `None` if it is not a quantity.
pub fn parse(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    if n < 0.0 || !n.is_finite() {
        return None;
    }
    Some((n * multiplier).ceil() as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse("10Gi"), Some(10 << 30));
        assert_eq!(parse("1G"), Some(1_000_000_000));
        assert_eq!(parse("1.5Ki"), Some(1536));
        assert_eq!(parse("100"), Some(100));
        assert_eq!(parse("1e3"), Some(1000));
        assert_eq!(parse("500m"), Some(1));
        assert_eq!(parse("ten"), None);
        assert_eq!(parse("10Gb"), None);
    }
}
