// The original's 9-stock.js (Express 4.18, node_redis 2.8), for bench/stock.py: only the ports are configurable.
const express = require('express');
const redis = require('redis');
const { promisify } = require('util');

const listProducts = [
  { itemId: 1, itemName: 'Suitcase 250', price: 50, initialAvailableQuantity: 4 },
  { itemId: 2, itemName: 'Suitcase 450', price: 100, initialAvailableQuantity: 10 },
  { itemId: 3, itemName: 'Suitcase 650', price: 350, initialAvailableQuantity: 2 },
  { itemId: 4, itemName: 'Suitcase 1050', price: 550, initialAvailableQuantity: 5 },
];

const getItemById = (id) => {
  const item = listProducts.find((obj) => obj.itemId === id);
  return item ? { ...item } : undefined;
};

const app = express();
const client = redis.createClient({ host: '127.0.0.1', port: Number(process.env.REDIS_PORT) });
const PORT = Number(process.env.PORT || 1245);

const reserveStockById = async (itemId, stock) => promisify(client.SET).bind(client)(`item.${itemId}`, stock);
const getCurrentReservedStockById = async (itemId) => promisify(client.GET).bind(client)(`item.${itemId}`);

app.get('/list_products', (_, res) => {
  res.json(listProducts);
});

app.get('/list_products/:itemId', (req, res) => {
  const itemId = Number.parseInt(req.params.itemId, 10);
  const productItem = getItemById(itemId);
  if (!productItem) {
    res.json({ status: 'Product not found' });
    return;
  }
  getCurrentReservedStockById(itemId)
    .then((result) => Number.parseInt(result || 0, 10))
    .then((reservedStock) => {
      productItem.currentQuantity = productItem.initialAvailableQuantity - reservedStock;
      res.json(productItem);
    });
});

app.get('/reserve_product/:itemId', (req, res) => {
  const itemId = Number.parseInt(req.params.itemId, 10);
  const productItem = getItemById(itemId);
  if (!productItem) {
    res.json({ status: 'Product not found' });
    return;
  }
  getCurrentReservedStockById(itemId)
    .then((result) => Number.parseInt(result || 0, 10))
    .then((reservedStock) => {
      if (reservedStock >= productItem.initialAvailableQuantity) {
        res.json({ status: 'Not enough stock available', itemId });
        return;
      }
      reserveStockById(itemId, reservedStock + 1).then(() => {
        res.json({ status: 'Reservation confirmed', itemId });
      });
    });
});

const resetProductsStock = () => Promise.all(listProducts.map((item) => reserveStockById(item.itemId, 0)));

app.listen(PORT, () => {
  resetProductsStock().then(() => console.log(`API available on localhost port ${PORT}`));
});
