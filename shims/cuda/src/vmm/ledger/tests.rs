use super::*;

const G: u64 = GRANULARITY;

#[test]
fn ggml_pool_sequence() {
    let mut ledger = Ledger::new();
    let base = ledger.reserve(64 * G, 0).expect("reserve");
    assert!(granular(base));
    let first = ledger.create(0, 4 * G, 100 * G).expect("create");
    ledger.map(base, 4 * G, 0, first).expect("map");
    ledger.check_mapped(base, 4 * G).expect("mapped");
    let second = ledger.create(0, 2 * G, 100 * G).expect("create");
    ledger.map(base + 4 * G, 2 * G, 0, second).expect("map");
    ledger
        .check_mapped(base, 6 * G)
        .expect("two mappings tile the range");
    assert_eq!(ledger.allocated_on(0), 6 * G);
    assert_eq!(ledger.allocated_on(1), 0);

    ledger.release(first).expect("release while mapped");
    assert_eq!(ledger.allocated_on(0), 6 * G, "still mapped");
    assert_eq!(
        ledger.free(base, 64 * G),
        Err(CUDA_ERROR_INVALID_VALUE),
        "mapped inside"
    );
    ledger.unmap(base, 6 * G).expect("unmap both");
    assert_eq!(ledger.allocated_on(0), 2 * G);
    ledger.release(second).expect("release");
    assert_eq!(ledger.allocated_on(0), 0);
    ledger.free(base, 64 * G).expect("free");
    assert_eq!(ledger.free(base, 64 * G), Err(CUDA_ERROR_INVALID_VALUE));
}

#[test]
fn allocations_respect_the_free_memory() {
    let mut ledger = Ledger::new();
    ledger.create(0, 8 * G, 10 * G).expect("fits");
    assert_eq!(
        ledger.create(0, 4 * G, 10 * G),
        Err(CUDA_ERROR_OUT_OF_MEMORY)
    );
    ledger.create(1, 8 * G, 10 * G).expect("other device");
}

#[test]
fn sizes_and_addresses_must_be_granular() {
    let mut ledger = Ledger::new();
    assert_eq!(ledger.create(0, 0, u64::MAX), Err(CUDA_ERROR_INVALID_VALUE));
    assert_eq!(
        ledger.create(0, G + 1, u64::MAX),
        Err(CUDA_ERROR_INVALID_VALUE)
    );
    assert_eq!(ledger.reserve(G / 2, 0), Err(CUDA_ERROR_INVALID_VALUE));
    assert_eq!(ledger.reserve(G, 3 * G), Err(CUDA_ERROR_INVALID_VALUE));
    let base = ledger.reserve(4 * G, 0).expect("reserve");
    let handle = ledger.create(0, 2 * G, u64::MAX).expect("create");
    assert_eq!(
        ledger.map(base + 1, G, 0, handle),
        Err(CUDA_ERROR_INVALID_VALUE)
    );
    assert_eq!(
        ledger.map(base, G, 1, handle),
        Err(CUDA_ERROR_INVALID_VALUE)
    );
    assert_eq!(
        ledger.map(u64::MAX - G + 1, G, 0, handle),
        Err(CUDA_ERROR_INVALID_VALUE)
    );
}

#[test]
fn reservations_honour_large_alignments() {
    let mut ledger = Ledger::new();
    ledger.reserve(G, 0).expect("reserve");
    let aligned = ledger.reserve(G, 1 << 30).expect("reserve");
    assert_eq!(aligned % (1 << 30), 0);
    assert_eq!(
        ledger
            .reserve(1 << 63, 0)
            .and_then(|_| ledger.reserve(1 << 63, 0)),
        Err(CUDA_ERROR_OUT_OF_MEMORY)
    );
}

#[test]
fn mapping_checks_handles_bounds_and_overlap() {
    let mut ledger = Ledger::new();
    let base = ledger.reserve(4 * G, 0).expect("reserve");
    let handle = ledger.create(0, 2 * G, u64::MAX).expect("create");
    assert_eq!(ledger.map(base, G, 0, 999), Err(CUDA_ERROR_INVALID_HANDLE));
    assert_eq!(
        ledger.map(base, 3 * G, 0, handle),
        Err(CUDA_ERROR_INVALID_VALUE),
        "beyond the allocation"
    );
    assert_eq!(
        ledger.map(base, G, 2 * G, handle),
        Err(CUDA_ERROR_INVALID_VALUE),
        "offset beyond"
    );
    assert_eq!(
        ledger.map(base + 4 * G, G, 0, handle),
        Err(CUDA_ERROR_INVALID_VALUE),
        "outside the reservation"
    );
    assert_eq!(
        ledger.map(base + 3 * G, 2 * G, 0, handle),
        Err(CUDA_ERROR_INVALID_VALUE),
        "crosses its end"
    );
    ledger.map(base + G, 2 * G, 0, handle).expect("map");
    assert_eq!(
        ledger.map(base, 2 * G, 0, handle),
        Err(CUDA_ERROR_INVALID_VALUE),
        "overlaps from below"
    );
    assert_eq!(
        ledger.map(base + 2 * G, G, G, handle),
        Err(CUDA_ERROR_INVALID_VALUE),
        "overlaps inside"
    );
    ledger.map(base, G, G, handle).expect("adjacent below");
    assert_eq!(
        ledger.unmap(base, 2 * G),
        Err(CUDA_ERROR_INVALID_VALUE),
        "splits a mapping"
    );
    assert_eq!(
        ledger.check_mapped(base, 4 * G),
        Err(CUDA_ERROR_INVALID_VALUE),
        "hole at the end"
    );
    ledger.unmap(base, 3 * G).expect("unmap");
    ledger.release(handle).expect("release");
    assert_eq!(ledger.release(handle), Err(CUDA_ERROR_INVALID_VALUE));
    assert_eq!(
        ledger.map(base, G, 0, handle),
        Err(CUDA_ERROR_INVALID_HANDLE)
    );
}
