//! Resume tokens: `<connection id>.<secret>`, the secret 32 bytes from the operating system's
//! CSPRNG, written in unpadded base64url. The public connection id only locates the session; the
//! secret, compared in constant time, proves the right to it.

use crate::SocketId;

/// Length of a secret, in bytes.
pub(crate) const SECRET_LEN: usize = 32;

/// A session's secret.
#[derive(Clone, Copy)]
pub(crate) struct Secret([u8; SECRET_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh secret from the operating system's CSPRNG. `None` only if the operating system
    /// cannot provide randomness (the session is then not resumable).
    pub(crate) fn random() -> Option<Secret> {
        let mut b = [0u8; SECRET_LEN];
        getrandom::fill(&mut b).ok()?;
        Some(Secret(b))
    }

    /// Constant-time equality: the time taken does not depend on where the secrets differ.
    pub(crate) fn matches(&self, other: &Secret) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    /// The token for session `id`: `<id>.<base64url(secret)>`.
    pub(crate) fn token(&self, id: SocketId) -> String {
        let mut s = String::with_capacity(16 + 1 + 43);
        s.push_str(&id.to_string());
        s.push('.');
        base64url(&self.0, &mut s);
        s
    }
}

impl Secret {
    /// The secret alone, in base64url (to store a parked session in an engine).
    pub(crate) fn encode(&self) -> String {
        let mut s = String::with_capacity(43);
        base64url(&self.0, &mut s);
        s
    }

    /// The inverse of [`encode`](Self::encode).
    pub(crate) fn decode(s: &str) -> Option<Secret> {
        let bytes: [u8; SECRET_LEN] = unbase64url(s)?.try_into().ok()?;
        Some(Secret(bytes))
    }
}

/// Split a token into its session id and secret. `None` if it is malformed.
pub(crate) fn parse(token: &str) -> Option<(SocketId, Secret)> {
    let (id, secret) = token.split_once('.')?;
    let id = SocketId::parse(id)?;
    let bytes = unbase64url(secret)?;
    let secret: [u8; SECRET_LEN] = bytes.try_into().ok()?;
    Some((id, Secret(secret)))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
}

fn unbase64url(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    // Reject non-canonical encodings (unused low bits set), so one secret has one spelling.
    let mut canon = String::new();
    base64url(&out, &mut canon);
    (canon == s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let id = SocketId::parse("0123456789abcdef").unwrap();
        let a = Secret::random().unwrap();
        let t = a.token(id);
        assert_eq!(t.len(), 16 + 1 + 43);
        assert!(t[17..].bytes().all(|c| ALPHABET.contains(&c)));
        let (pid, b) = parse(&t).unwrap();
        assert_eq!(pid, id);
        assert!(a.matches(&b));
        let c = Secret::random().unwrap();
        assert!(!a.matches(&c), "two random secrets differ");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let id = SocketId::parse("0123456789abcdef").unwrap();
        let t = Secret::random().unwrap().token(id);
        for bad in [
            "",
            ".",
            "0123456789abcdef",
            "0123456789abcdef.",
            &t[..t.len() - 1],
            &format!("{t}A"),
            &t.replace('.', ":"),
            &format!("x{}", &t[1..]),
            &format!("{}=", &t),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        // A non-canonical last character (its unused low bits set) is refused.
        let mut last = t.clone();
        let c = last.pop().unwrap();
        let i = ALPHABET.iter().position(|a| *a as char == c).unwrap();
        last.push(ALPHABET[i ^ 1] as char);
        assert!(parse(&last).is_none(), "{last:?}");
    }

    #[test]
    fn base64url_matches_known_vectors() {
        let mut s = String::new();
        base64url(b"foobar", &mut s);
        assert_eq!(s, "Zm9vYmFy");
        s.clear();
        base64url(b"fo", &mut s);
        assert_eq!(s, "Zm8");
        s.clear();
        base64url(&[0xfb, 0xff], &mut s);
        assert_eq!(s, "-_8");
        assert_eq!(unbase64url("-_8").unwrap(), vec![0xfb, 0xff]);
    }
}
