//! The books of the virtual memory management API: physical allocations (handles), reserved
//! address ranges, and which allocation is mapped where. Addresses are numbers only; nothing
//! behind them is ever backed by memory.

use std::collections::BTreeMap;

use crate::ffi::*;

/// Allocation granularity, minimum and recommended alike (as on an H100).
pub const GRANULARITY: u64 = 2 << 20;

/// Where reserved ranges start: high in the user address space, far from the heap.
const FIRST_ADDRESS: u64 = 0x2000_0000_0000;

#[derive(Debug)]
struct Allocation {
    device: CUdevice,
    size: u64,
    mappings: usize,
    /// `cuMemRelease` was called; the memory is freed with the last mapping.
    released: bool,
}

#[derive(Debug)]
struct Mapping {
    size: u64,
    handle: CUmemGenericAllocationHandle,
}

#[derive(Debug)]
pub struct Ledger {
    next_handle: CUmemGenericAllocationHandle,
    next_address: u64,
    allocations: BTreeMap<CUmemGenericAllocationHandle, Allocation>,
    /// Reserved ranges: start → size.
    reservations: BTreeMap<u64, u64>,
    /// Mapped ranges by start address.
    mappings: BTreeMap<u64, Mapping>,
}

fn granular(value: u64) -> bool {
    value.is_multiple_of(GRANULARITY)
}

/// A non-empty range of whole granules, as `(start, end)`.
fn granular_range(start: u64, size: u64) -> Outcome<(u64, u64)> {
    let end = start.checked_add(size).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    if size == 0 || !granular(start) || !granular(size) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    Ok((start, end))
}

impl Ledger {
    pub const fn new() -> Self {
        Self {
            next_handle: 1,
            next_address: FIRST_ADDRESS,
            allocations: BTreeMap::new(),
            reservations: BTreeMap::new(),
            mappings: BTreeMap::new(),
        }
    }

    /// Bytes allocated on `device` and not yet freed.
    pub fn allocated_on(&self, device: CUdevice) -> u64 {
        self.allocations
            .values()
            .filter(|a| a.device == device)
            .map(|a| a.size)
            .sum()
    }

    /// `cuMemCreate`, limited by the `free_bytes` the device started with.
    pub fn create(
        &mut self,
        device: CUdevice,
        size: u64,
        free_bytes: u64,
    ) -> Outcome<CUmemGenericAllocationHandle> {
        granular_range(0, size)?;
        let wanted = self.allocated_on(device).saturating_add(size);
        if wanted > free_bytes {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.allocations.insert(
            handle,
            Allocation {
                device,
                size,
                mappings: 0,
                released: false,
            },
        );
        Ok(handle)
    }

    /// `cuMemRelease`: the memory goes once nothing maps it any more.
    pub fn release(&mut self, handle: CUmemGenericAllocationHandle) -> Outcome {
        let allocation = self.allocations.get_mut(&handle).filter(|a| !a.released);
        let allocation = allocation.ok_or(CUDA_ERROR_INVALID_VALUE)?;
        allocation.released = true;
        if allocation.mappings == 0 {
            self.allocations.remove(&handle);
        }
        Ok(())
    }

    /// `cuMemAddressReserve`: a fresh range aligned to `alignment` (0 means the granularity).
    pub fn reserve(&mut self, size: u64, alignment: u64) -> Outcome<u64> {
        granular_range(0, size)?;
        if alignment != 0 && !alignment.is_power_of_two() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let alignment = alignment.max(GRANULARITY);
        let start = self.next_address.checked_next_multiple_of(alignment);
        let end = start.and_then(|start| start.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        };
        self.next_address = end;
        self.reservations.insert(start, size);
        Ok(start)
    }

    /// `cuMemAddressFree`: exactly a reserved range, with nothing mapped in it.
    pub fn free(&mut self, start: u64, size: u64) -> Outcome {
        if self.reservations.get(&start) != Some(&size)
            || self.mappings.range(start..start + size).next().is_some()
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.reservations.remove(&start);
        Ok(())
    }

    /// `cuMemMap`: `size` bytes of `handle` from `offset`, inside one reservation, over
    /// nothing already mapped.
    pub fn map(
        &mut self,
        start: u64,
        size: u64,
        offset: u64,
        handle: CUmemGenericAllocationHandle,
    ) -> Outcome {
        let (start, end) = granular_range(start, size)?;
        let allocation = self.allocations.get(&handle).filter(|a| !a.released);
        let allocation = allocation.ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if !granular(offset)
            || offset
                .checked_add(size)
                .is_none_or(|last| last > allocation.size)
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let reserved = self.reservations.range(..=start).next_back();
        if reserved.is_none_or(|(&base, &length)| end > base + length) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let previous = self.mappings.range(..end).next_back();
        if previous.is_some_and(|(&base, mapping)| base + mapping.size > start) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.mappings.insert(start, Mapping { size, handle });
        if let Some(allocation) = self.allocations.get_mut(&handle) {
            allocation.mappings += 1;
        }
        Ok(())
    }

    /// The starts of the mappings that tile `[start, start + size)` exactly.
    fn tiling(&self, start: u64, size: u64) -> Outcome<Vec<u64>> {
        let (start, end) = granular_range(start, size)?;
        let mut starts = Vec::new();
        let mut cursor = start;
        while cursor < end {
            let mapping = self.mappings.get(&cursor).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            starts.push(cursor);
            cursor += mapping.size;
        }
        if cursor == end {
            Ok(starts)
        } else {
            Err(CUDA_ERROR_INVALID_VALUE)
        }
    }

    /// `cuMemSetAccess` needs its whole range mapped.
    pub fn check_mapped(&self, start: u64, size: u64) -> Outcome {
        self.tiling(start, size).map(drop)
    }

    /// `cuMemUnmap`: whole mappings only.
    pub fn unmap(&mut self, start: u64, size: u64) -> Outcome {
        for base in self.tiling(start, size)? {
            let Some(mapping) = self.mappings.remove(&base) else {
                continue;
            };
            let Some(allocation) = self.allocations.get_mut(&mapping.handle) else {
                continue;
            };
            allocation.mappings = allocation.mappings.saturating_sub(1);
            if allocation.released && allocation.mappings == 0 {
                self.allocations.remove(&mapping.handle);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
