//! Python's number formatting, so `out.log` and `params.txt` read exactly as OpenCLIP's do
//! (and the two can be diffed): `repr(float)`, `format(x, "#g")`, `format(x, "#.5g")`.

/// Shortest round-trip digits and decimal exponent of a finite non-zero `x`: `x = 0.d1d2… × 10^(e+1)`.
fn shortest(x: f64) -> (String, i32) {
    let s = format!("{:e}", x.abs()); // e.g. "5e-5", "1.2345e3"
    let (mant, exp) = s.split_once('e').expect("exponent");
    (mant.replace('.', ""), exp.parse().expect("exponent digits"))
}

/// `repr(x)` of a Python float.
pub fn repr_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let (digits, exp) = shortest(x);
    let n = digits.len() as i32;
    if (-4..16).contains(&exp) {
        let s = if exp >= 0 {
            let int_len = (exp + 1) as usize;
            if digits.len() <= int_len {
                format!("{}{}.0", digits, "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{s}")
    } else {
        let m = if n > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// `format(x, "#.{precision}g")`: `precision` significant digits, trailing zeros kept.
pub fn alt_g(x: f64, precision: usize) -> String {
    if !x.is_finite() {
        return repr_float(x);
    }
    let p = precision.max(1);
    if x == 0.0 {
        return format!("{:.*}", p - 1, 0.0);
    }
    // The exponent after rounding to p significant digits decides the style, as in C's %g.
    let sci = format!("{:.*e}", p - 1, x);
    let exp: i32 = sci
        .split_once('e')
        .expect("exponent")
        .1
        .parse()
        .expect("exponent digits");
    if exp < -4 || exp >= p as i32 {
        let (m, _) = sci.split_once('e').expect("exponent");
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        format!("{:.*}", (p as i32 - 1 - exp) as usize, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python() {
        // Values printed by CPython 3.11.
        assert_eq!(repr_float(5e-5), "5e-05");
        assert_eq!(repr_float(0.0005), "0.0005");
        assert_eq!(repr_float(0.2), "0.2");
        assert_eq!(repr_float(1.0), "1.0");
        assert_eq!(repr_float(1e16), "1e+16");
        assert_eq!(repr_float(123456.75), "123456.75");
        assert_eq!(repr_float(-2.5e-7), "-2.5e-07");
        assert_eq!(alt_g(1234.5, 6), "1234.50");
        assert_eq!(alt_g(0.000123, 6), "0.000123000");
        assert_eq!(alt_g(1.5e-5, 6), "1.50000e-05");
        assert_eq!(alt_g(2.0794415, 5), "2.0794");
        assert_eq!(alt_g(12.3456, 5), "12.346");
        assert_eq!(alt_g(999999.5, 6), "1.00000e+06");
        assert_eq!(alt_g(0.0, 5), "0.0000");
    }
}
