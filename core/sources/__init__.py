"""Statement sources: one module per format, one registry (this literal list)."""

from core.sources.adyen import AdyenSettlementDetail
from core.sources.alipay import AlipayTradeBill
from core.sources.alipay_account import AlipayAccountStatement
from core.sources.camt import CamtStatement
from core.sources.base import ControlTotalError, InputFile, ParseError, Parsed, Source  # noqa: F401
from core.sources.generic import GenericStatement
from core.sources.mt940 import Mt940Statement
from core.sources.ofx import OfxStatement
from core.sources.orders import OrdersExport
from core.sources.orders_sql import OrdersSql
from core.sources.unionpay import UnionPayAcpFlow
from core.sources.paypal import PayPalSettlementReport, PayPalTransactionDetailReport
from core.sources.paypal_csv import PayPalActivityCSV
from core.sources.stripe import StripeBalanceReport
from core.sources.wechatpay import WeChatPayTradeBill
from core.sources.wechatpay_fundflow import WeChatPayFundFlowBill

# kind (as written in config) -> source class
REGISTRY: dict[str, type] = {
    "orders": OrdersExport,
    "wechatpay": WeChatPayTradeBill,
    "alipay": AlipayTradeBill,
    "wechatpay_fundflow": WeChatPayFundFlowBill,
    "unionpay": UnionPayAcpFlow,
    "alipay_account": AlipayAccountStatement,
    "mt940": Mt940Statement,
    "camt": CamtStatement,
    "ofx": OfxStatement,
    "generic": GenericStatement,
    "stripe": StripeBalanceReport,
    "paypal_stl": PayPalSettlementReport,
    "paypal_trr": PayPalTransactionDetailReport,
    "paypal_activity": PayPalActivityCSV,
    "adyen": AdyenSettlementDetail,
    "orders_sql": OrdersSql,  # reads the shop's database (`recon pull`), claims no file
}
