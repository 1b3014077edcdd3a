//! Allocator settings for services that stream blobs in ~1 MiB buffers.

/// Below this size glibc's malloc serves requests from its heaps instead of a fresh `mmap()`.
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the top of a heap kept for reuse before glibc gives it back to the kernel.
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Tunes glibc's malloc for a service whose hot path allocates and frees ~1 MiB buffers
/// (blob chunks, their gRPC frames): by default the first ones are fresh `mmap()`s and, once
/// glibc's dynamic threshold has moved past them, the heap top is trimmed back to the kernel
/// every time a few of them are freed, so every new buffer page-faults its memory in again (tens
/// of thousands of faults per 200 MB pull). With fixed thresholds the buffers reuse the same
/// memory; the cost is that up to [`TRIM_THRESHOLD`] of free heap stays resident after a pull.
/// Call once at the top of `main`, before the async runtime starts its threads. No-op where malloc is not glibc's.
pub fn tune_for_streaming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Gives the free memory of every malloc arena back to the kernel (`malloc_trim(0)`). For a
/// service after a burst that grew its heaps and will not repeat soon (runtime-svc after an
/// unpack: its decode threads' arenas otherwise stay resident, ~25 MB after a 100 MB image).
/// Takes a few milliseconds: call it off the request path. No-op where malloc is not glibc's.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; it is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}
