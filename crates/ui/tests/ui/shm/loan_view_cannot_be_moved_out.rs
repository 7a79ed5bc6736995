// A loan's view cannot be moved out of the loan (and so write the block after `publish`,
// while the receiver reads it): the loan derefs to its view for reading only.
fn main() {
    let ch = courier::shm::ShmChannel::connect("x", Default::default(), std::time::Duration::ZERO)
        .unwrap();
    let mut a = ch.loan().unwrap();
    let mut b = ch.loan().unwrap();
    std::mem::swap(&mut *a, &mut *b);
    a.publish(1).unwrap();
    b.fill(0);
}
