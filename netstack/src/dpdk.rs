//! `dpdk::Mbuf` as a stack frame.

use crate::frame::{Frame, RxChecksum};

impl Frame for dpdk::Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        dpdk::Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        dpdk::Mbuf::data_mut(self)
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        dpdk::Mbuf::truncate(self, len)
    }
    #[inline]
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        dpdk::Mbuf::append(self, n)
    }
    #[inline]
    fn rx_l4_checksum(&self) -> RxChecksum {
        match dpdk::Mbuf::rx_l4_checksum(self) {
            dpdk::mbuf::RxChecksum::Good => RxChecksum::Good,
            dpdk::mbuf::RxChecksum::Bad => RxChecksum::Bad,
            dpdk::mbuf::RxChecksum::Unknown => RxChecksum::Unknown,
        }
    }
    #[inline]
    fn attach(&mut self, payload: &bytes::Bytes) -> bool {
        self.attach_external(payload.clone()).is_ok()
    }
    #[inline]
    fn rx_ipv4_checksum(&self) -> RxChecksum {
        match self.rx_ip_checksum() {
            dpdk::mbuf::RxChecksum::Good => RxChecksum::Good,
            dpdk::mbuf::RxChecksum::Bad => RxChecksum::Bad,
            dpdk::mbuf::RxChecksum::Unknown => RxChecksum::Unknown,
        }
    }
}
