//! Kubernetes resource quantities ("250m", "8Gi", "1.5", "1e3") as integers,
//! and back to text: the control plane reads the cluster's figures with it,
//! and the stand-in API server's scheduler and quota controller both read
//! and print them.

/// `q` in thousandths of its unit, rounded up as Kubernetes rounds, or None
/// when it is not a quantity. CPU "250m" is 250; memory "1Ki" is 1,024,000.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() + fraction.len() > 30
    {
        return None;
    }
    // The number as digits over 10^scale.
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut scale = fraction.len() as i32;
    let mut multiplier: i128 = 1;
    match suffix {
        "" => {}
        "Ki" => multiplier = 1 << 10,
        "Mi" => multiplier = 1 << 20,
        "Gi" => multiplier = 1 << 30,
        "Ti" => multiplier = 1 << 40,
        "Pi" => multiplier = 1 << 50,
        "Ei" => multiplier = 1 << 60,
        "n" => scale += 9,
        "u" => scale += 6,
        "m" => scale += 3,
        "k" => scale -= 3,
        "M" => scale -= 6,
        "G" => scale -= 9,
        "T" => scale -= 12,
        "P" => scale -= 15,
        "E" => scale -= 18,
        s => {
            let exponent: i32 = s.strip_prefix(['e', 'E'])?.parse().ok()?;
            if !(-30..=30).contains(&exponent) {
                return None;
            }
            scale -= exponent;
        }
    }
    // value * 1000 = digits * multiplier * 1000 / 10^scale, rounded up.
    let scale = scale - 3;
    let n = digits.checked_mul(multiplier)?;
    let value = if scale <= 0 {
        n.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?
    } else {
        let d = 10i128.checked_pow(scale as u32)?;
        (n + d - 1) / d
    };
    Some(if negative { -value } else { value })
}

/// CPU in millicores ("2" is 2000, "250m" 250), 0 when unreadable.
pub fn millicores(q: &str) -> i64 {
    milli(q).map_or(0, |m| m.clamp(0, i64::MAX as i128) as i64)
}

/// Bytes or a count ("8Gi", "110"), rounded up, 0 when unreadable.
pub fn whole(q: &str) -> i64 {
    milli(q).map_or(0, |m| ((m + 999) / 1000).clamp(0, i64::MAX as i128) as i64)
}

/// A CPU figure in millicores as Kubernetes prints it: "2" or "500m".
pub fn format_millicores(m: i64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// A byte count as Kubernetes prints a binary quantity: the largest binary
/// suffix that divides it ("4Gi", "1536Mi"), else the plain number.
pub fn format_bytes(bytes: i64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (shift, suffix) in [
        (60, "Ei"),
        (50, "Pi"),
        (40, "Ti"),
        (30, "Gi"),
        (20, "Mi"),
        (10, "Ki"),
    ] {
        if bytes % (1i64 << shift) == 0 {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_nodes_and_pods_use() {
        assert_eq!(millicores("4"), 4000);
        assert_eq!(millicores("3800m"), 3800);
        assert_eq!(millicores("0.5"), 500);
        assert_eq!(millicores("100u"), 1, "rounded up as Kubernetes does");
        assert_eq!(whole("8Gi"), 8 << 30);
        assert_eq!(whole("16318564Ki"), 16_318_564 * 1024);
        assert_eq!(whole("100G"), 100_000_000_000);
        assert_eq!(whole("1.5Gi"), 3 << 29);
        assert_eq!(whole("1e3"), 1000);
        assert_eq!(whole("110"), 110);
        assert_eq!(whole("128974848"), 128_974_848);
        assert_eq!(whole("129e6"), 129_000_000);
        assert_eq!(whole("123Mi"), 123 << 20);
    }

    #[test]
    fn prints_figures_as_kubernetes_does() {
        assert_eq!(format_millicores(2000), "2");
        assert_eq!(format_millicores(250), "250m");
        assert_eq!(format_bytes(4 << 30), "4Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for q in [
            "",
            "Gi",
            "1.2.3",
            "1Qi",
            "abc",
            "1e99",
            "--1",
            "99999999999999999999999999999999",
        ] {
            assert_eq!(milli(q), None, "{q:?}");
        }
        assert_eq!(whole("-1"), 0, "negative figures count as none");
    }
}
