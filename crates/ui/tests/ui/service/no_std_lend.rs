// A no_std service's requests sit in a `static` slot: a lent buffer would have to outlive the
// borrow that lends it, so the macro refuses the lend and says what to pass instead.
#[courier::service(no_std)]
trait Flash {
    fn write(&self, offset: u32, #[lend] data: &[u8]) -> usize;
}

fn main() {}
