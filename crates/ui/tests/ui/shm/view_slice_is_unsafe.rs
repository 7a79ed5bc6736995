// The raw slice of a view exists, behind `unsafe`: the caller vouches that no one writes the
// bytes meanwhile.
fn bytes<'a>(v: &'a courier::shm::ShmView<'_>) -> &'a [u8] {
    v.as_slice()
}

fn main() {}
