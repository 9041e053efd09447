//! Arbitrary bytes as a safetensors file: `WeightLoader::from_bytes`, then for every tensor the
//! file lists `take` with its own shape and with a wrong one, `take_optional`, `finish`, and every
//! error formatted. Nothing may panic, read out of bounds, or allocate from a size the header
//! claims without the bytes to back it (`scripts/fuzz.sh` runs this under `-rss_limit_mb` and
//! `-malloc_limit_mb`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use transformer::{WeightError, WeightLoader};

fuzz_target!(|data: &[u8]| {
    let mut loader = match WeightLoader::from_bytes(data.to_vec(), "fuzz.safetensors") {
        Ok(loader) => loader,
        Err(err) => {
            check_error(&err);
            return;
        }
    };
    // Both settings matter (NaN detection vs. pass-through); pick one from the input.
    loader.allow_non_finite(data.len() % 2 == 1);
    let _ = format!("{loader:?}");

    // Whatever the header says, a valid file's tensors fit in its bytes: F32/F16/BF16 conversion
    // at most doubles the size, and the zeros returned for an unsupported sub-byte dtype (F4, F6)
    // hold at most 2 elements per byte.
    let budget = data.len().saturating_mul(8).saturating_add(64);
    for name in loader.names() {
        assert!(loader.contains(&name));
        let (dtype, shape) = loader.info(&name).expect("a listed tensor has info");
        let _ = format!("{dtype} {shape:?}");
        let elements: usize = shape.iter().product();
        assert!(elements.saturating_mul(4) <= budget, "{name}: {shape:?} is not backed by the file");

        let values = loader.take(&name, &shape);
        assert_eq!(values.len(), elements, "take({name:?}) returned the wrong length");
        if loader.problems().is_empty() {
            assert!(values.iter().all(|v| v.is_finite()) || data.len() % 2 == 1);
        }
        // A wrong shape with the same element count (a trailing 1), so the zeros it returns stay
        // as bounded as the tensor itself.
        let mut wrong = shape.clone();
        wrong.push(1);
        assert_eq!(loader.take(&name, &wrong).len(), elements);
        // A wrong shape with a different, small element count.
        let small = [elements.min(7) + 1];
        assert_eq!(loader.take(&name, &small).len(), small[0]);
        if let Some(values) = loader.take_optional(&name, &shape) {
            assert_eq!(values.len(), elements);
        } else {
            panic!("take_optional({name:?}) of a listed tensor returned None");
        }
        assert!(loader.take_optional(&format!("{name}\u{0}absent"), &[3]).is_none());
    }
    let _ = loader.take("missing.weight", &[2, 3]);
    loader.ignore("ignored.weight");
    for problem in loader.problems() {
        let text = problem.to_string();
        assert!(!text.contains('\n'), "a problem spans lines: {text:?}");
        let _ = problem.name();
    }
    if let Err(err) = loader.finish() {
        check_error(&err);
    }
});

fn check_error(err: &WeightError) {
    let text = err.to_string();
    let _ = format!("{err:?}");
    let _ = err.path();
    // One line per problem plus the heading: file-controlled names cannot inject lines.
    if let WeightError::Problems { problems, .. } = err {
        assert_eq!(text.lines().count(), problems.len() + 1, "{text:?}");
    }
    let _ = std::error::Error::source(err);
}
